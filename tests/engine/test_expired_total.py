"""The expiry counter behind ``kai_inventory_holds_expired_total``: every ``reap()`` (a write
script's own, or the background reaper's ``reap.lua``) adds the holds it expired to a counter of
the Redis Functions library, and ``Inventory.expired_total()`` sums it over the servers.

Each test runs on a private Redis and on the session's 3-master Cluster: the counter is per
server and per library load, and the shared Redis is used (and its library reloaded, which
starts the counter again) by other test runs at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from model import small_layout

from kai_inventory import localstack
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import HoldRequest, Inventory
from kai_inventory.engine.keys import Keys

TTL = 60_000


@pytest.fixture(params=["single", "cluster"])
def counter_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "cluster":
        yield str(request.getfixturevalue("redis_cluster").url)
        return
    with localstack.private_redis() as server:
        yield server.url


@pytest.fixture
async def inv(counter_url: str, inventory_factory: Any) -> Inventory:
    inventory: Inventory = await inventory_factory(test_clock=True, url=counter_url)
    return inventory


def _schedule_ids(inv: Inventory, count: int, prefix: str) -> list[str]:
    """``count`` schedule ids; on Cluster the first ones on as many different masters as
    there are."""
    if not inv.cluster:
        return [f"{prefix}{i}" for i in range(count)]
    cluster: Any = inv.redis
    spread = min(len(cluster.get_primaries()), count)
    picked: list[str] = []
    nodes: set[str] = set()
    for i in range(10_000):
        sid = f"{prefix}{i}"
        node = cluster.get_node_from_key(inv.keys.schedule(sid).meta).name
        if node not in nodes or len(nodes) >= spread:
            picked.append(sid)
            nodes.add(node)
            if len(picked) == count:
                return picked
    raise AssertionError("schedules do not spread over the masters")


async def _hold(inv: Inventory, sid: str, seat: int, ttl_ms: int = TTL) -> str:
    out = await inv.hold(HoldRequest(sid, f"u{seat}", 0, 2, ttl_ms, seats=[seat]))
    assert out.code == Code.OK
    assert out.hold is not None
    return out.hold.hold_id


async def test_holds_expired_by_a_write_scripts_reap_count_once_each(inv: Inventory) -> None:
    (sid,) = _schedule_ids(inv, 1, "WR")
    await inv.open(small_layout(sid))
    before = await inv.expired_total()
    for seat in range(3):
        await _hold(inv, sid, seat)
    kept = await _hold(inv, sid, 3, ttl_ms=10 * TTL)
    assert await inv.expired_total() == before  # nothing expired yet
    await inv.advance_clock(sid, TTL + 1_000)
    await _hold(inv, sid, 4)  # the hold script reaps the 3 expired holds first
    assert await inv.expired_total() == before + 3
    # reaping again, and any later write, finds nothing more to count
    assert await inv.reap(sid) == 0
    assert await inv.set_status(sid, "delayed", 5, "signal") == Code.OK
    assert await inv.expired_total() == before + 3
    hold = await inv.get_hold(kept)
    assert hold is not None
    assert hold.status == "held"


async def test_holds_expired_by_the_background_reaper_are_counted(inv: Inventory) -> None:
    ids = _schedule_ids(inv, 3, "BG")
    for sid in ids:
        await inv.open(small_layout(sid))
    before = await inv.expired_total()
    for sid in ids:
        await _hold(inv, sid, 0, ttl_ms=300)
    await _hold(inv, ids[0], 1, ttl_ms=10 * TTL)  # still live
    await asyncio.sleep(0.45)
    assert await inv.reap_due() == 3  # reap.lua on each schedule
    assert await inv.expired_total() == before + 3
    assert await inv.reap_due() == 0
    assert await inv.expired_total() == before + 3


async def test_released_and_confirmed_holds_are_not_counted_as_expired(inv: Inventory) -> None:
    (sid,) = _schedule_ids(inv, 1, "RC")
    await inv.open(small_layout(sid))
    before = await inv.expired_total()
    released = await _hold(inv, sid, 0)
    confirmed = await _hold(inv, sid, 1)
    await _hold(inv, sid, 2)  # left to expire
    assert (await inv.release(released, "u0"))[0] == Code.OK
    assert (await inv.confirm_begin(confirmed, "u1"))[0] == Code.OK
    assert await inv.confirm(confirmed, "B1") == Code.OK
    await inv.advance_clock(sid, TTL + 1_000)
    assert await inv.reap(sid) == 1
    assert await inv.expired_total() == before + 1


async def test_expired_total_survives_another_process_starting_and_restarts_with_the_library(
    inv: Inventory,
) -> None:
    (sid,) = _schedule_ids(inv, 1, "LD")
    await inv.open(small_layout(sid))
    await _hold(inv, sid, 0)
    await inv.advance_clock(sid, TTL + 1_000)
    assert await inv.reap(sid) == 1
    counted = await inv.expired_total()
    assert counted >= 1
    await inv.load_scripts()  # another process starting: the same library is kept
    assert await inv.expired_total() == counted
    client: Any = inv.redis
    await client.function_flush()  # a Redis restart without persistence
    await inv.load_scripts()
    assert await inv.expired_total() == 0


async def test_expired_total_reloads_a_lost_library_instead_of_failing(inv: Inventory) -> None:
    client: Any = inv.redis
    await client.function_flush()  # a restart without persistence (every master on Cluster)
    assert await inv.expired_total() == 0
    assert await inv.scripts.missing() == []


async def test_expired_total_sums_the_counter_of_every_master(
    redis_cluster: Any, inventory_factory: Any
) -> None:
    inv: Inventory = await inventory_factory(test_clock=True, url=str(redis_cluster.url))
    cluster: Any = inv.redis
    masters = {node.name for node in cluster.get_primaries()}
    ids = _schedule_ids(inv, len(masters), "SUM")
    assert {cluster.get_node_from_key(inv.keys.schedule(s).meta).name for s in ids} == masters
    before = await inv.expired_total()
    for n, sid in enumerate(ids, start=1):  # n holds expire on the n-th master
        await inv.open(small_layout(sid))
        for seat in range(n):
            await _hold(inv, sid, seat)
        await inv.advance_clock(sid, TTL + 1_000)
        assert await inv.reap(sid) == n
    per_master = await inv.scripts.call_on_every_server("expired_total", [inv.keys.prefix])
    assert len(per_master) == len(masters)
    assert await inv.expired_total() == before + sum(range(1, len(masters) + 1))


async def test_expired_total_counts_only_its_own_key_prefix(inv: Inventory) -> None:
    other = Inventory(inv.redis, Keys(inv.keys.prefix + "x"), test_clock=True)
    await other.load_scripts()  # another deployment on the same Redis: the same library
    before = await other.expired_total()
    (sid,) = _schedule_ids(inv, 1, "PF")
    await inv.open(small_layout(sid))
    await _hold(inv, sid, 0)
    await inv.advance_clock(sid, TTL + 1_000)
    counted = await inv.expired_total()
    assert await inv.reap(sid) == 1
    assert await inv.expired_total() == counted + 1
    assert await other.expired_total() == before
