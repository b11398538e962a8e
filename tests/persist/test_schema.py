"""What the schema itself guarantees: no seat-leg sold twice, and an indexed search."""

from __future__ import annotations

import datetime as dt
import json
import secrets

import asyncpg
import pytest

from kai_inventory.domain import Coach, ScheduleDef, Stop, Train
from kai_inventory.persist import catalogue


def _definition(date: dt.date, number: str = "7") -> ScheduleDef:
    return ScheduleDef(
        train=Train(number=number, name="Taksaka"),
        departure_date=date,
        stops=[
            Stop(station="GMR", name="Gambir", departure="08:50"),
            Stop(station="CN", name="Cirebon", arrival="11:40", departure="11:45"),
            Stop(station="PWT", name="Purwokerto", arrival="13:30", departure="13:35"),
            Stop(station="YK", name="Yogyakarta", arrival="15:10"),
        ],
        coaches=[Coach(car=1, cls="executive", seats=["1A", "1B"], base_price="450000")],
    )


async def _schedule(conn: asyncpg.Connection, date: dt.date) -> str:
    schedule_id = "sch-" + secrets.token_hex(4)
    async with conn.transaction():
        await catalogue.write_schedule(conn, schedule_id, _definition(date), "Asia/Jakarta")
    return schedule_id


async def _ticket(conn: asyncpg.Connection, schedule_id: str, seat: str, a: int, b: int) -> None:
    """One booking with one passenger and one ticket on seat ``seat`` for legs [a, b)."""
    async with conn.transaction():
        await conn.execute("INSERT INTO users (id) VALUES ('u1') ON CONFLICT DO NOTHING")
        booking = await conn.fetchval(
            """
            INSERT INTO bookings (booking_number, hold_id, user_id, schedule_id, from_index,
                                  to_index, from_station, to_station, passenger_count)
            VALUES ($1, $2, 'u1', $3, $4, $5, 'X', 'Y', 1) RETURNING id
            """,
            "KAI" + secrets.token_hex(5),
            f"{schedule_id}.{secrets.token_hex(8)}",
            schedule_id,
            a,
            b,
        )
        seat_id = await conn.fetchval(
            "SELECT se.id FROM seats se JOIN schedules s ON s.train_id = se.train_id"
            " WHERE s.id = $1 AND se.car_number || '-' || se.seat_number = $2",
            schedule_id,
            seat,
        )
        passenger = await conn.fetchval(
            "INSERT INTO passengers (booking_id, passenger_name, identity_number, seat_id)"
            " VALUES ($1, 'Budi', '31740123', $2) RETURNING id",
            booking,
            seat_id,
        )
        await conn.execute(
            """
            INSERT INTO tickets (booking_id, passenger_id, schedule_id, seat_id, from_index,
                                 to_index, ticket_number, qr_code)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'qr')
            """,
            booking,
            passenger,
            schedule_id,
            seat_id,
            a,
            b,
            "T" + secrets.token_hex(6),
        )


async def test_overlapping_legs_on_one_seat_are_refused_with_23p01(pool):
    async with pool.acquire() as conn:
        schedule_id = await _schedule(conn, dt.date(2030, 1, 10))
        await _ticket(conn, schedule_id, "1-1A", 0, 2)  # GMR -> PWT
        with pytest.raises(asyncpg.ExclusionViolationError) as caught:
            await _ticket(conn, schedule_id, "1-1A", 1, 3)  # CN -> YK overlaps leg 1
        assert caught.value.sqlstate == "23P01"
        with pytest.raises(asyncpg.ExclusionViolationError):
            await _ticket(conn, schedule_id, "1-1A", 0, 3)
        # nothing of the refused bookings was written: the transaction rolled back
        assert (
            await conn.fetchval("SELECT count(*) FROM tickets WHERE schedule_id = $1", schedule_id)
            == 1
        )


async def test_adjacent_legs_and_other_seats_and_cancelled_tickets_do_not_conflict(pool):
    async with pool.acquire() as conn:
        schedule_id = await _schedule(conn, dt.date(2030, 1, 11))
        await _ticket(conn, schedule_id, "1-1A", 0, 1)  # GMR -> CN
        await _ticket(conn, schedule_id, "1-1A", 1, 3)  # CN -> YK: adjacent, half-open
        await _ticket(conn, schedule_id, "1-1B", 0, 3)  # another seat
        await conn.execute(
            "UPDATE tickets SET ticket_status = 'cancelled' WHERE schedule_id = $1"
            " AND seat_id = (SELECT seat_id FROM tickets WHERE schedule_id = $1 LIMIT 1)"
            " AND from_index = 0",
            schedule_id,
        )
        await _ticket(conn, schedule_id, "1-1A", 0, 1)  # the cancelled leg is sellable again
        other = await _schedule(conn, dt.date(2030, 1, 12))
        await _ticket(conn, other, "1-1A", 0, 3)  # same train and seat, another schedule


async def test_search_finds_the_from_stop_by_its_local_date_and_only_forwards(pool):
    async with pool.acquire() as conn:
        date = dt.date(2031, 5, 1)
        schedule_id = await _schedule(conn, date)
        rows = await catalogue.search(conn, "CN", "YK", date)
        mine = [r for r in rows if r.schedule_id == schedule_id]
        assert len(mine) == 1
        assert (mine[0].from_index, mine[0].to_index) == (1, 3)
        assert (mine[0].departure, mine[0].arrival) == ("11:45", "15:10")
        assert all(
            r.schedule_id != schedule_id for r in await catalogue.search(conn, "YK", "CN", date)
        )
        assert all(
            r.schedule_id != schedule_id
            for r in await catalogue.search(conn, "CN", "YK", date + dt.timedelta(days=1))
        )


def _nodes(plan: dict) -> list[dict]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


async def test_search_plan_uses_indexes_on_a_catalogue_of_ten_thousand_schedules(private_db):
    conn = await asyncpg.connect(await private_db())
    try:
        # 40 stations, 100 trains, 10,000 schedules of 6 stops over 100 days, built in SQL
        await conn.execute(
            """
            INSERT INTO stations (station_code, station_name)
            SELECT 'S' || chr(65 + i / 26) || chr(65 + i % 26), 'Station ' || i
            FROM generate_series(1, 40) i;
            INSERT INTO trains (train_number, train_name)
            SELECT 'T' || i, 'Train ' || i FROM generate_series(1, 100) i;
            INSERT INTO routes (route_name, stops_key, origin_station_id, destination_station_id)
            SELECT 'route ' || i, 'r' || i, 1, 2 FROM generate_series(1, 100) i;
            INSERT INTO schedules (id, train_id, route_id, departure_date, departure_time,
                                   arrival_time, departs_at, coaches, definition, layout_hash)
            SELECT 'bulk-' || i, 1 + i % 100, 1 + i % 100, date '2030-01-01' + (i / 100),
                   '08:00', '16:00',
                   timestamptz '2030-01-01 08:00+07' + (i / 100) * interval '1 day',
                   '[]', '{}', 'x'
            FROM generate_series(0, 9999) i;
            INSERT INTO schedule_stops (schedule_id, stop_index, station_id, departure_time,
                                        service_date, departs_at)
            SELECT 'bulk-' || i, k, 1 + (i * 7 + k * 5) % 40, time '08:00' + k * interval '1 hour',
                   date '2030-01-01' + (i / 100),
                   timestamptz '2030-01-01 08:00+07' + (i / 100) * interval '1 day'
                       + k * interval '1 hour'
            FROM generate_series(0, 9999) i, generate_series(0, 5) k;
            ANALYZE;
            """
        )
        assert await conn.fetchval("SELECT count(*) FROM schedules") >= 10_000
        date = dt.date(2030, 2, 1)
        plan_json = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + catalogue.SEARCH_SQL, "SAB", "SAL", date
        )
        nodes = _nodes(json.loads(plan_json)[0]["Plan"])
        on_stops = [n for n in nodes if n.get("Relation Name") == "schedule_stops"]
        assert on_stops, nodes
        assert all(n["Node Type"] != "Seq Scan" for n in on_stops), on_stops
        indexes = {n.get("Index Name") for n in nodes}
        assert "schedule_stops_station_date_idx" in indexes, nodes
        on_schedules = [n for n in nodes if n.get("Relation Name") == "schedules"]
        assert all(n["Node Type"] != "Seq Scan" for n in on_schedules), on_schedules
        # and the answer is right: every schedule that day calling at S01 and later at S11
        rows = await catalogue.search(conn, "SAB", "SAL", date)
        expected = await conn.fetchval(
            """
            SELECT count(*) FROM schedule_stops a JOIN schedule_stops b USING (schedule_id)
            WHERE a.station_id = 1 AND b.station_id = 11 AND b.stop_index > a.stop_index
              AND a.service_date = $1
            """,
            date,
        )
        assert len(rows) == expected
    finally:
        await conn.close()
