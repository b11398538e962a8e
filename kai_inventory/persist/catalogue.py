"""Catalogue rows: stations, trains, classes, seats, routes, schedules and their stops.

``write_schedule`` upserts everything one ``ScheduleDef`` implies, inside the caller's
transaction. Seats belong to trains (as in the ERD): a train's seat rows are the union of every
coach composition it has been defined with; a schedule's own composition is kept in
``schedules.coaches`` (and in full in ``schedules.definition``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import zoneinfo
from collections.abc import Sequence

import asyncpg
import msgspec

from kai_inventory.domain import CLASS_ORDER, ScheduleDef

_DEF_ENCODER = msgspec.json.Encoder(order="deterministic")
_DEF_DECODER = msgspec.json.Decoder(ScheduleDef)


@dataclasses.dataclass(frozen=True, slots=True)
class StationInfo:
    code: str
    name: str
    city: str | None = None
    province: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleRow:
    schedule_id: str
    definition: ScheduleDef
    definition_json: str
    layout_hash: str
    status: str
    delay_minutes: int
    delay_reason: str | None
    station_names: dict[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class SearchRow:
    schedule_id: str
    status: str
    train_number: str
    train_name: str
    train_type: str
    from_index: int
    from_station: str
    departure: str | None
    to_index: int
    to_station: str
    arrival: str | None


def encode_definition(definition: ScheduleDef) -> str:
    """Canonical JSON of a definition: equal definitions give equal text."""
    return _DEF_ENCODER.encode(definition).decode()


def decode_definition(text: str) -> ScheduleDef:
    return _DEF_DECODER.decode(text)


def layout_hash(definition: ScheduleDef) -> str:
    """What may not change under live holds or sales: train, stops, and the seats by class."""
    digest = hashlib.sha256()
    digest.update(definition.train.number.encode())
    digest.update(b"\x1e" + ",".join(s.station for s in definition.stops).encode())
    for coach in definition.coaches:
        digest.update(f"\x1e{coach.car}:{coach.cls}:".encode() + ",".join(coach.seats).encode())
    return digest.hexdigest()[:24]


def _local(date: dt.date, day: int, clock: str | None, tz: zoneinfo.ZoneInfo) -> dt.datetime | None:
    if clock is None:
        return None
    hours, minutes = clock.split(":")
    moment = dt.datetime.combine(date + dt.timedelta(days=day), dt.time(int(hours), int(minutes)))
    return moment.replace(tzinfo=tz)


def _clock(value: str | None) -> dt.time | None:
    if value is None:
        return None
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


def _seat_type(label: str, letters: int) -> str | None:
    letter = label[-1:].upper()
    if letters == 4:  # 2-2: A B | C D
        return {"A": "window", "D": "window", "B": "aisle", "C": "aisle"}.get(letter)
    if letters == 5:  # 3-2: A B C | D E
        return {"A": "window", "E": "window", "C": "aisle", "D": "aisle", "B": "middle"}.get(letter)
    return None


async def upsert_stations(conn: asyncpg.Connection, stations: Sequence[StationInfo]) -> None:
    """Reference data for stations (names, cities, coordinates); existing rows are updated."""
    rows = sorted(stations, key=lambda s: s.code)
    await conn.executemany(
        """
        INSERT INTO stations (station_code, station_name, city, province, latitude, longitude)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (station_code) DO UPDATE SET
            station_name = EXCLUDED.station_name, city = EXCLUDED.city,
            province = EXCLUDED.province, latitude = EXCLUDED.latitude,
            longitude = EXCLUDED.longitude, updated_at = now()
        WHERE (stations.station_name, stations.city, stations.province, stations.latitude,
               stations.longitude)
              IS DISTINCT FROM (EXCLUDED.station_name, EXCLUDED.city, EXCLUDED.province,
                                EXCLUDED.latitude, EXCLUDED.longitude)
        """,
        [(s.code, s.name, s.city, s.province, s.latitude, s.longitude) for s in rows],
    )


async def _station_ids(conn: asyncpg.Connection, definition: ScheduleDef) -> dict[str, int]:
    stops = sorted(definition.stops, key=lambda s: s.station)  # one lock order for all writers
    codes = [s.station for s in stops]
    names = [s.name for s in stops]
    await conn.execute(
        """
        INSERT INTO stations (station_code, station_name)
        SELECT code, coalesce(name, code) FROM unnest($1::text[], $2::text[]) AS u(code, name)
        ON CONFLICT (station_code) DO NOTHING
        """,
        codes,
        names,
    )
    await conn.execute(
        """
        UPDATE stations s SET station_name = u.name, updated_at = now()
        FROM unnest($1::text[], $2::text[]) AS u(code, name)
        WHERE s.station_code = u.code AND u.name IS NOT NULL AND s.station_name <> u.name
        """,
        codes,
        names,
    )
    rows = await conn.fetch(
        "SELECT id, station_code FROM stations WHERE station_code = ANY($1::text[])", codes
    )
    return {r["station_code"]: r["id"] for r in rows}


async def _train_id(conn: asyncpg.Connection, definition: ScheduleDef) -> int:
    train = definition.train
    capacity = sum(len(c.seats) for c in definition.coaches)
    await conn.execute(
        """
        INSERT INTO trains (train_number, train_name, train_type, total_capacity)
        VALUES ($1, $2, $3::train_type, $4)
        ON CONFLICT (train_number) DO UPDATE SET
            train_name = EXCLUDED.train_name, train_type = EXCLUDED.train_type,
            total_capacity = greatest(trains.total_capacity, EXCLUDED.total_capacity),
            updated_at = now()
        WHERE (trains.train_name, trains.train_type) IS DISTINCT FROM
              (EXCLUDED.train_name, EXCLUDED.train_type)
           OR trains.total_capacity < EXCLUDED.total_capacity
        """,
        train.number,
        train.name,
        train.type,
        capacity,
    )
    train_id: int = await conn.fetchval(
        "SELECT id FROM trains WHERE train_number = $1", train.number
    )
    return train_id


async def _class_ids(
    conn: asyncpg.Connection, train_id: int, definition: ScheduleDef
) -> dict[str, int]:
    capacity: dict[str, int] = {}
    price: dict[str, str] = {}
    for coach in definition.coaches:
        capacity[coach.cls] = capacity.get(coach.cls, 0) + len(coach.seats)
        price.setdefault(coach.cls, coach.base_price)
    classes = [c for c in CLASS_ORDER if c in capacity]
    await conn.execute(
        """
        INSERT INTO train_classes (train_id, class_type, capacity, base_price)
        SELECT $1, cls::class_type, cap, price
        FROM unnest($2::text[], $3::int[], $4::numeric[]) AS u(cls, cap, price)
        ON CONFLICT (train_id, class_type) DO UPDATE SET
            capacity = EXCLUDED.capacity, base_price = EXCLUDED.base_price, updated_at = now()
        WHERE (train_classes.capacity, train_classes.base_price)
              IS DISTINCT FROM (EXCLUDED.capacity, EXCLUDED.base_price)
        """,
        train_id,
        classes,
        [capacity[c] for c in classes],
        [decimal.Decimal(price[c]) for c in classes],
    )
    rows = await conn.fetch(
        "SELECT id, class_type::text AS cls FROM train_classes WHERE train_id = $1", train_id
    )
    return {r["cls"]: r["id"] for r in rows}


async def _upsert_seats(
    conn: asyncpg.Connection, train_id: int, class_ids: dict[str, int], definition: ScheduleDef
) -> None:
    cars: list[int] = []
    labels: list[str] = []
    classes: list[int] = []
    types: list[str | None] = []
    for coach in definition.coaches:
        letters = len({label[-1:].upper() for label in coach.seats if label[-1:].isalpha()})
        for label in coach.seats:
            cars.append(coach.car)
            labels.append(label)
            classes.append(class_ids[coach.cls])
            types.append(_seat_type(label, letters))
    await conn.execute(
        """
        INSERT INTO seats (train_id, class_id, car_number, seat_number, seat_type)
        SELECT $1, cls, car, label, st::seat_type
        FROM unnest($2::int[], $3::text[], $4::bigint[], $5::text[]) AS u(car, label, cls, st)
        ON CONFLICT (train_id, car_number, seat_number) DO UPDATE SET
            class_id = EXCLUDED.class_id, seat_type = EXCLUDED.seat_type, updated_at = now()
        WHERE (seats.class_id, seats.seat_type) IS DISTINCT FROM
              (EXCLUDED.class_id, EXCLUDED.seat_type)
        """,
        train_id,
        cars,
        labels,
        classes,
        types,
    )


async def _route_id(
    conn: asyncpg.Connection, definition: ScheduleDef, stations: dict[str, int]
) -> int:
    stops = definition.stops
    key = ",".join(s.station for s in stops)
    first = stops[0]
    start = _minute(first.departure, first.day)
    last = stops[-1]
    duration = _minute(last.arrival, last.day) - start
    names = await conn.fetch(
        "SELECT station_code, station_name FROM stations WHERE station_code = ANY($1::text[])",
        [first.station, last.station],
    )
    by_code = {r["station_code"]: r["station_name"] for r in names}
    route_id: int | None = await conn.fetchval(
        """
        INSERT INTO routes (route_name, stops_key, origin_station_id, destination_station_id,
                            estimated_duration)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (stops_key) DO NOTHING
        RETURNING id
        """,
        f"{by_code[first.station]} - {by_code[last.station]}",
        key,
        stations[first.station],
        stations[last.station],
        duration,
    )
    if route_id is None:
        existing: int = await conn.fetchval("SELECT id FROM routes WHERE stops_key = $1", key)
        return existing
    await conn.executemany(
        """
        INSERT INTO route_stations (route_id, station_id, station_order, arrival_offset,
                                    departure_offset)
        VALUES ($1, $2, $3, $4, $5)
        """,
        [
            (
                route_id,
                stations[s.station],
                i,
                None if s.arrival is None else _minute(s.arrival, s.day) - start,
                None if s.departure is None else _minute(s.departure, s.day) - start,
            )
            for i, s in enumerate(stops)
        ],
    )
    return route_id


def _minute(clock: str | None, day: int) -> int:
    if clock is None:
        return day * 1440
    hours, minutes = clock.split(":")
    return day * 1440 + int(hours) * 60 + int(minutes)


_SCHEDULE = """
SELECT id, definition::text AS definition, layout_hash, status::text AS status, delay_minutes,
       delay_reason
FROM schedules WHERE id = $1
"""
_SCHEDULE_FOR_UPDATE = _SCHEDULE + " FOR UPDATE"


async def get_schedule(
    conn: asyncpg.Connection, schedule_id: str, *, for_update: bool = False
) -> ScheduleRow | None:
    row = await conn.fetchrow(_SCHEDULE_FOR_UPDATE if for_update else _SCHEDULE, schedule_id)
    if row is None:
        return None
    names = await conn.fetch(
        """
        SELECT st.station_code, st.station_name FROM schedule_stops ss
        JOIN stations st ON st.id = ss.station_id WHERE ss.schedule_id = $1
        """,
        schedule_id,
    )
    return ScheduleRow(
        schedule_id=row["id"],
        definition=decode_definition(row["definition"]),
        definition_json=row["definition"],
        layout_hash=row["layout_hash"],
        status=row["status"],
        delay_minutes=row["delay_minutes"],
        delay_reason=row["delay_reason"],
        station_names={r["station_code"]: r["station_name"] for r in names},
    )


async def lock_schedule_id(conn: asyncpg.Connection, schedule_id: str) -> None:
    """Serialise writers of one schedule id, even before its row exists (transaction lock)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('schedule:' || $1, 0))", schedule_id
    )


async def has_live_tickets(conn: asyncpg.Connection, schedule_id: str) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM tickets WHERE schedule_id = $1"
        " AND ticket_status <> 'cancelled')",
        schedule_id,
    )
    return found


async def write_schedule(
    conn: asyncpg.Connection, schedule_id: str, definition: ScheduleDef, timezone: str
) -> None:
    """Upsert every catalogue row of one schedule (inside the caller's transaction)."""
    tz = zoneinfo.ZoneInfo(timezone)
    stations = await _station_ids(conn, definition)
    train_id = await _train_id(conn, definition)
    class_ids = await _class_ids(conn, train_id, definition)
    await _upsert_seats(conn, train_id, class_ids, definition)
    route_id = await _route_id(conn, definition, stations)
    date = definition.departure_date
    first, last = definition.stops[0], definition.stops[-1]
    departs_at = _local(date, first.day, first.departure, tz)
    coaches = msgspec.json.encode(definition.coaches).decode()
    await conn.execute(
        """
        INSERT INTO schedules (id, train_id, route_id, departure_date, departure_time,
                               arrival_time, arrival_day, departs_at, coaches, definition,
                               layout_hash)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11)
        ON CONFLICT (id) DO UPDATE SET
            train_id = EXCLUDED.train_id, route_id = EXCLUDED.route_id,
            departure_date = EXCLUDED.departure_date, departure_time = EXCLUDED.departure_time,
            arrival_time = EXCLUDED.arrival_time, arrival_day = EXCLUDED.arrival_day,
            departs_at = EXCLUDED.departs_at, coaches = EXCLUDED.coaches,
            definition = EXCLUDED.definition, layout_hash = EXCLUDED.layout_hash,
            updated_at = now()
        """,
        schedule_id,
        train_id,
        route_id,
        date,
        _clock(first.departure),
        _clock(last.arrival),
        last.day,
        departs_at,
        coaches,
        encode_definition(definition),
        layout_hash(definition),
    )
    await conn.execute("DELETE FROM schedule_stops WHERE schedule_id = $1", schedule_id)
    await conn.executemany(
        """
        INSERT INTO schedule_stops (schedule_id, stop_index, station_id, arrival_time,
                                    departure_time, day_offset, service_date, arrives_at,
                                    departs_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        [
            (
                schedule_id,
                i,
                stations[s.station],
                _clock(s.arrival),
                _clock(s.departure),
                s.day,
                date + dt.timedelta(days=s.day),
                _local(date, s.day, s.arrival, tz),
                _local(date, s.day, s.departure, tz),
            )
            for i, s in enumerate(definition.stops)
        ],
    )


async def set_status(
    conn: asyncpg.Connection, schedule_id: str, status: str, delay_minutes: int, reason: str | None
) -> bool:
    result: str = await conn.execute(
        """
        UPDATE schedules SET status = $2::schedule_status, delay_minutes = $3,
                             delay_reason = $4, updated_at = now()
        WHERE id = $1
        """,
        schedule_id,
        status,
        delay_minutes,
        reason,
    )
    return result.endswith(" 1")


# The search query (a test EXPLAINs this very text): the from stop by (station, service_date)
# through schedule_stops_station_date_idx, the to stop by (schedule_id, station_id).
SEARCH_SQL = """
SELECT s.id AS schedule_id, s.status::text AS status, t.train_number, t.train_name,
       t.train_type::text AS train_type,
       a.stop_index AS from_index, to_char(a.departure_time, 'HH24:MI') AS departure,
       b.stop_index AS to_index, to_char(b.arrival_time, 'HH24:MI') AS arrival
FROM schedule_stops a
JOIN schedule_stops b ON b.schedule_id = a.schedule_id AND b.stop_index > a.stop_index
JOIN schedules s ON s.id = a.schedule_id
JOIN trains t ON t.id = s.train_id
WHERE a.station_id = (SELECT id FROM stations WHERE station_code = $1)
  AND b.station_id = (SELECT id FROM stations WHERE station_code = $2)
  AND a.service_date = $3
ORDER BY a.departs_at, s.id
"""


async def search(
    conn: asyncpg.Connection | asyncpg.Pool, from_station: str, to_station: str, date: dt.date
) -> list[SearchRow]:
    rows = await conn.fetch(SEARCH_SQL, from_station, to_station, date)
    return [
        SearchRow(
            schedule_id=r["schedule_id"],
            status=r["status"],
            train_number=r["train_number"],
            train_name=r["train_name"],
            train_type=r["train_type"],
            from_index=r["from_index"],
            from_station=from_station,
            departure=r["departure"],
            to_index=r["to_index"],
            to_station=to_station,
            arrival=r["arrival"],
        )
        for r in rows
    ]


async def open_schedule_ids(
    conn: asyncpg.Connection | asyncpg.Pool, since: dt.date, schedule_id: str | None = None
) -> list[str]:
    """Schedules still served: departing on ``since`` or later (any status)."""
    rows = await conn.fetch(
        "SELECT id FROM schedules WHERE departure_date >= $1 AND ($2::text IS NULL OR id = $2)"
        " ORDER BY departure_date, id",
        since,
        schedule_id,
    )
    return [r["id"] for r in rows]
