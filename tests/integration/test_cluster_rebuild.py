"""Redis Cluster and Postgres: a shard that lost its data is rebuilt alone.

Three schedules live on three masters. One master restarts empty: its epoch marker is gone,
the background check rebuilds that shard's schedule from Postgres (sales stand), and the other
shards are left alone (their live holds are untouched, nothing of theirs is rebuilt).
"""

from __future__ import annotations

from typing import Any

from sales_helpers import definition, hold, request

from kai_inventory.engine.codes import Code
from kai_inventory.engine.views import availability
from kai_inventory.sales import PutOutcome, Sales, open_sales
from kai_inventory.settings import Settings


def _one_per_master(sales: Sales) -> list[str]:
    cluster: Any = sales.inventory.redis
    found: dict[str, str] = {}
    for i in range(1000):
        sid = f"rb-{i}"
        node = cluster.get_node_from_key(sales.inventory.keys.schedule(sid).meta).name
        found.setdefault(node, sid)
        if len(found) == 3:
            return list(found.values())
    raise AssertionError("schedules do not spread over the masters")


async def test_a_shard_that_lost_its_data_is_rebuilt_alone(
    settings: Settings, private_db: Any, redis_cluster: Any
) -> None:
    dsn = await private_db()
    cluster_settings = settings.replace(redis_url=redis_cluster.url, database_url=dsn)
    async with open_sales(cluster_settings) as sales:
        assert sales.inventory.cluster
        ids = _one_per_master(sales)
        for sid in ids:
            assert await sales.put_schedule(sid, definition()) == PutOutcome.CREATED
            sold = await hold(sales, sid, ["1-1A"], a=0, b=2, user="buyer")
            assert (await sales.confirm(sold.hold_id, "buyer", request(["1-1A"]))).code == Code.OK
        live = {sid: await hold(sales, sid, ["1-1B"], user="holder") for sid in ids}
        await sales.watch_epoch()  # first start: every shard's marker set
        assert await sales.inventory.missing_epochs() == []
        layout = await sales.inventory.layout(ids[0])
        snap = await sales.inventory.snapshot(ids[0])
        assert layout is not None
        assert snap is not None
        assert availability(layout, snap, 0, 3)[0].available == 2  # 1A sold, 1B held

        cluster: Any = sales.inventory.redis
        victim = cluster.get_node_from_key(sales.inventory.keys.schedule(ids[0]).meta)
        redis_cluster.restart_empty(victim.port)

        rebuilt: list[str] = []
        original = sales._open_from_postgres

        async def spy(schedule_id: str, trigger: str, restore: bool, **more: bool) -> bool:
            rebuilt.append(schedule_id)
            return await original(schedule_id, trigger=trigger, restore=restore, **more)

        sales._open_from_postgres = spy  # type: ignore[method-assign]
        await sales.watch_epoch()
        assert ids[0] in rebuilt
        assert not set(rebuilt) & set(ids[1:])  # the other shards were not touched
        assert await sales.inventory.missing_epochs() == []

        # the lost shard: sales restored from Postgres, its live hold gone with the shard
        snap = await sales.inventory.snapshot(ids[0])
        assert snap is not None
        assert availability(layout, snap, 0, 3)[0].available == 3  # 1A still sold
        lost = await sales.inventory.get_hold(live[ids[0]].hold_id)
        assert lost is None
        # the other shards: live holds still held, sold seat-legs still sold
        for sid in ids[1:]:
            kept = await sales.inventory.get_hold(live[sid].hold_id)
            assert kept is not None
            assert kept.status == "held"
        again = await sales.inventory.hold(_request(ids[0], layout.seat_index("1-1A")))
        assert again.code == Code.SEATS_UNAVAILABLE  # the sale stands after the rebuild


def _request(schedule_id: str, seat: int | None) -> Any:
    from kai_inventory.engine.inventory import HoldRequest

    assert seat is not None
    return HoldRequest(schedule_id, "late", 0, 2, 60_000, seats=[seat])
