"""Redis rebuilt from Postgres: lost schedules, lost data (epoch), verify/repair, backup/restore."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as aioredis
from sales_helpers import definition, hold, new_id, request, try_hold

from kai_inventory import metrics
from kai_inventory.engine.codes import Code
from kai_inventory.engine.views import availability
from kai_inventory.engine.waiting_room import QCode, SaleConfig
from kai_inventory.persist import peak_sales as pg_sales
from kai_inventory.persist.backup import backup_command, restore_command
from kai_inventory.sales import Sales, open_sales, rebuild_command, verify_command
from kai_inventory.settings import Settings

JOURNEYS = [(0, 3), (0, 1), (1, 2), (2, 3), (1, 3)]


async def _drop_redis_keys(redis_url: str, prefix: str) -> None:
    """What a Redis restart without persistence does to us (our prefix only: shared server)."""
    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _availability(sales: Sales, schedule_id: str) -> list[object]:
    layout = await sales.ensure_schedule(schedule_id)
    snap = await sales.inventory.snapshot(schedule_id)
    assert layout is not None
    assert snap is not None
    return [availability(layout, snap, a, b) for a, b in JOURNEYS]


async def _sell(sales: Sales, schedule_id: str) -> None:
    for seats, (a, b), user in (
        (["1-1A", "1-1B"], (0, 2), "u1"),
        (["1-1A"], (2, 3), "u2"),
        (["5-1C"], (1, 3), "u3"),
    ):
        h = await hold(sales, schedule_id, seats, a=a, b=b, user=user)
        assert (await sales.confirm(h.hold_id, user, request(seats))).code == Code.OK
    cancelled = await hold(sales, schedule_id, ["1-1D"], user="u4")
    booking = (await sales.confirm(cancelled.hold_id, "u4", request(["1-1D"]))).booking
    assert booking is not None
    await sales.cancel(booking.booking_number, "u4")


@contextlib.asynccontextmanager
async def _sales_on(settings: Settings, dsn: str) -> AsyncIterator[Sales]:
    async with open_sales(settings.replace(database_url=dsn)) as sales:
        yield sales


async def test_after_redis_lost_everything_the_next_request_sees_the_same_availability(
    sales, settings
):
    schedule_id = new_id()
    await sales.put_schedule(schedule_id, definition())
    await _sell(sales, schedule_id)
    live = await hold(sales, schedule_id, ["5-1E"], user="u5")  # a live hold dies with Redis
    before = await _availability(sales, schedule_id)

    await _drop_redis_keys(settings.redis_url, settings.key_prefix)
    assert await sales.inventory.snapshot(schedule_id) is None
    rebuilt_before = metrics.REBUILDS.labels("lost")._value.get()

    after = await _availability(sales, schedule_id)  # ensure_schedule: rebuild on demand
    assert metrics.REBUILDS.labels("lost")._value.get() == rebuilt_before + 1
    for was, now in zip(before, after, strict=True):
        executive_was, economy_was = was
        executive_now, economy_now = now
        assert executive_now == executive_was  # sold seats came back exactly
        assert economy_now.available == economy_was.available + 1  # the live hold (5-1E) is gone
    assert await sales.inventory.get_hold(live.hold_id) is None
    assert await try_hold(sales, schedule_id, ["1-1A"], 1, 2) == Code.SEATS_UNAVAILABLE
    assert await try_hold(sales, schedule_id, ["1-1A"], 2, 3) == Code.SEATS_UNAVAILABLE
    assert await try_hold(sales, schedule_id, ["5-1C"], 2, 3) == Code.SEATS_UNAVAILABLE
    assert await try_hold(sales, schedule_id, ["5-1C"], 0, 1) == Code.OK
    assert await try_hold(sales, schedule_id, ["1-1D"], 0, 3) == Code.OK  # cancelled: free
    assert await sales.differences(schedule_id) == []


async def test_a_missing_epoch_marker_rebuilds_every_open_schedule_without_an_operator(
    settings, private_db
):
    dsn = await private_db()
    async with _sales_on(settings, dsn) as sales:
        ids = [new_id(), new_id()]
        for schedule_id in ids:
            await sales.put_schedule(schedule_id, definition())
        await _sell(sales, ids[0])
        await sales.watch_epoch()  # first start: marker set
        assert await sales.inventory.epoch_present()
        before = await _availability(sales, ids[0])

        await _drop_redis_keys(settings.redis_url, settings.key_prefix)
        assert not await sales.inventory.epoch_present()
        await sales.watch_epoch()
        assert await sales.inventory.epoch_present()
        assert sorted(await sales.inventory.open_schedule_ids()) == sorted(ids)
        snap = await sales.inventory.snapshot(ids[0])
        layout = await sales.inventory.layout(ids[0])
        assert snap is not None
        assert layout is not None
        assert [availability(layout, snap, a, b) for a, b in JOURNEYS] == before
        assert await sales.reconcile() == 0  # nothing left to finish


async def test_a_missing_epoch_marker_puts_every_open_peak_sale_back_without_an_operator(
    settings, private_db
):
    dsn = await private_db()
    async with _sales_on(settings, dsn) as sales:
        schedule_id = new_id()
        await sales.put_schedule(schedule_id, definition())
        now = await sales.room.now_ms()
        sale = SaleConfig(
            sale_id="peak",
            schedules=[schedule_id],
            opens_ms=now - 60_000,
            closes_ms=now + 3_600_000,
            admit_per_s=50,
            max_admitted=10,
            idle_ms=300_000,
            admission_ttl_ms=900_000,
        )
        assert (await sales.put_sale(sale)).created
        closed = pg_sales.SaleDef("gone", [new_id()], now - 7_200_000, now - 3_600_000, 1, 1, 1, 1)
        async with sales.pool.acquire() as conn:
            await pg_sales.upsert_sale(conn, closed)
            assert await pg_sales.get_sale(conn, "peak") is not None
        await sales.watch_epoch()  # first start: marker set

        await _drop_redis_keys(settings.redis_url, settings.key_prefix)
        assert await sales.room.get_sale("peak") is None
        await sales.watch_epoch()
        assert await sales.room.get_sale("peak") == sale
        assert await sales.room.get_sale("gone") is None  # closed: not put back
        await sales.room.refresh_directory()
        assert sales.room.active_sale(schedule_id) == "peak"
        assert (await sales.room.join("peak", "u1")).code == QCode.OK  # users join again
        assert await sales.restore_sales("operator") == 1  # again: unchanged, queue kept
        assert (await sales.room.status("peak", "u1")).code == QCode.OK


async def test_verify_reports_and_repairs_both_directions_of_disagreement(
    settings, private_db, capsys
):
    dsn = await private_db()
    async with _sales_on(settings, dsn) as sales:
        schedule_id = new_id()
        await sales.put_schedule(schedule_id, definition())
        await _sell(sales, schedule_id)
        layout = await sales.inventory.layout(schedule_id)
        assert layout is not None
        # Redis forgets one sale and invents another
        assert (
            await sales.inventory.cancel(schedule_id, 0, 2, [layout.seat_index("1-1B")]) == Code.OK
        )
        await sales.inventory.restore(
            schedule_id, [(0, 1, [layout.seat_index("5-1A")])], replace=False
        )
    args = argparse.Namespace(repair=False)
    env_settings = settings.replace(database_url=dsn)
    assert await asyncio.to_thread(verify_command, env_settings, args) == 1
    out = capsys.readouterr().out
    assert "seat 1-1B legs [0, 2) sold in Postgres" in out
    assert "seat 5-1A legs [0, 1) sold in Redis, not sold in Postgres" in out
    assert (
        await asyncio.to_thread(verify_command, env_settings, argparse.Namespace(repair=True)) == 0
    )
    assert await asyncio.to_thread(verify_command, env_settings, args) == 0
    assert (
        await asyncio.to_thread(rebuild_command, env_settings, argparse.Namespace(schedule=None))
        == 0
    )
    assert "rebuilt 1 schedule(s)" in capsys.readouterr().out


async def test_backup_drop_restore_rebuild_gives_the_same_availability(
    settings, private_db, pg_admin_dsn, tmp_path
):
    dsn = await private_db()
    env_settings = settings.replace(database_url=dsn)
    schedule_id = new_id()
    async with _sales_on(settings, dsn) as sales:
        await sales.put_schedule(schedule_id, definition())
        await _sell(sales, schedule_id)
        before = await _availability(sales, schedule_id)
    dump = tmp_path / "kai.dump"
    assert (
        await asyncio.to_thread(backup_command, env_settings, argparse.Namespace(file=str(dump)))
        == 0
    )
    assert dump.stat().st_size > 0

    name = dsn.rpartition("/")[2]
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    await _drop_redis_keys(settings.redis_url, settings.key_prefix)

    assert (
        await asyncio.to_thread(restore_command, env_settings, argparse.Namespace(file=str(dump)))
        == 0
    )
    async with _sales_on(settings, dsn) as sales:
        assert await sales.rebuild() == 1
        assert await _availability(sales, schedule_id) == before
        assert await try_hold(sales, schedule_id, ["1-1A"], 0, 1) == Code.SEATS_UNAVAILABLE
        assert await sales.differences(schedule_id) == []
