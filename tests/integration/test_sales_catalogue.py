"""The catalogue through Sales: Postgres rows and the Redis inventory, replaced safely."""

from __future__ import annotations

import datetime as dt

import msgspec
from sales_helpers import definition, hold, new_id, request

from kai_inventory.engine.codes import Code
from kai_inventory.sales import PutOutcome, SearchResult


async def test_put_creates_then_same_body_is_unchanged_and_time_change_replaces(sales, pool):
    schedule_id = new_id()
    base = definition()
    assert await sales.put_schedule(schedule_id, base) is PutOutcome.CREATED
    assert await sales.put_schedule(schedule_id, base) is PutOutcome.UNCHANGED
    layout = await sales.inventory.layout(schedule_id)
    assert layout is not None
    assert layout.stops == ["GMR", "CN", "PWT", "YK"]
    assert layout.n_seats == 9
    h = await hold(sales, schedule_id, ["1-1A"])  # a live hold: times may still change
    later = definition(departure="09:05", date=base.departure_date)
    assert await sales.put_schedule(schedule_id, later) is PutOutcome.REPLACED
    view = await sales.get_schedule(schedule_id)
    assert view is not None
    assert view.stops[0].departure == "09:05"
    assert (await sales.inventory.get_hold(h.hold_id)).status == "held"
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM schedule_stops WHERE schedule_id = $1", schedule_id
            )
            == 4
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM seats se JOIN schedules s ON s.train_id = se.train_id"
                " WHERE s.id = $1 AND (se.car_number, se.seat_number) IN ((1, '1A'), (5, '1E'))",
                schedule_id,
            )
            == 2
        )


async def test_changing_seats_under_a_live_hold_or_a_sale_is_refused_and_nothing_changes(sales):
    schedule_id = new_id()
    base = definition()
    await sales.put_schedule(schedule_id, base)
    h = await hold(sales, schedule_id, ["1-1A"])
    fewer = definition(seats=("1A", "1B"), date=base.departure_date)
    assert await sales.put_schedule(schedule_id, fewer) is PutOutcome.IN_USE
    view = await sales.get_schedule(schedule_id)
    assert view is not None
    assert view.coaches[0].seats == ["1A", "1B", "1C", "1D"]
    assert (await sales.confirm(h.hold_id, "u1", request(["1-1A"]))).code == Code.OK
    assert await sales.put_schedule(schedule_id, fewer) is PutOutcome.IN_USE  # sold in Postgres
    other = new_id()
    await sales.put_schedule(other, base)
    assert await sales.put_schedule(other, fewer) is PutOutcome.REPLACED  # nothing held or sold
    layout = await sales.inventory.layout(other)
    assert layout is not None
    assert layout.n_seats == 7


async def test_status_changes_reach_postgres_and_redis_and_unknown_schedules_are_false(sales):
    schedule_id = new_id()
    await sales.put_schedule(schedule_id, definition())
    assert await sales.set_status(schedule_id, "delayed", 15, "signal fault")
    view = await sales.get_schedule(schedule_id)
    assert view is not None
    assert (view.status, view.delay_minutes, view.reason) == ("delayed", 15, "signal fault")
    snap = await sales.inventory.snapshot(schedule_id)
    assert snap is not None
    assert (snap.status, snap.delay_minutes) == ("delayed", 15)
    assert not await sales.set_status("t-nope", "cancelled", 0, None)
    assert await sales.get_schedule("t-nope") is None


async def test_search_answers_from_the_catalogue_with_live_availability(sales):
    date = dt.date.today() + dt.timedelta(days=200)
    schedule_id = new_id()
    await sales.put_schedule(schedule_id, definition(date=date))
    h = await hold(sales, schedule_id, ["1-1A", "1-1B"], a=1, b=2)
    await sales.confirm(h.hold_id, "u1", request(["1-1A", "1-1B"]))
    found = [r for r in await sales.search("CN", "YK", date) if r.schedule_id == schedule_id]
    assert len(found) == 1
    body = msgspec.to_builtins(found[0])
    assert body["from"] == {"station": "CN", "departure": "11:45"}
    assert body["to"] == {"station": "YK", "arrival": "15:10"}
    assert body["classes"] == [
        {"class": "executive", "total": 4, "available": 2},
        {"class": "economy", "total": 5, "available": 5},
    ]
    assert body["train"] == {"number": "7", "name": "Taksaka", "type": "express"}
    beyond = [r for r in await sales.search("PWT", "YK", date) if r.schedule_id == schedule_id]
    assert beyond[0].classes[0].available == 4  # the sale covered CN -> PWT only
    assert not [r for r in await sales.search("YK", "GMR", date) if r.schedule_id == schedule_id]
    assert isinstance(found[0], SearchResult)
