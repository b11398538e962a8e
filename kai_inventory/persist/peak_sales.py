"""Peak sales (the waiting room's sale definitions) in the ``sales`` table.

Redis runs the waiting room; this table keeps each sale's definition as its last accepted
``PUT /v1/admin/sales/{sale_id}`` so that recovery can put the sales not yet closed back into
Redis after Redis lost its data. Times cross this module as epoch milliseconds (what the engine
uses) and are stored as ``timestamptz`` (exact: Postgres keeps microseconds).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import asyncpg

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)

_SELECT = """
SELECT id, schedule_ids, opens_at, closes_at, admit_per_s, max_admitted, idle_s, admission_ttl_s
FROM sales
"""
_GET = _SELECT + "WHERE id = $1"
_GET_FOR_UPDATE = _GET + " FOR UPDATE"
_OPEN = _SELECT + "WHERE closes_at > now() ORDER BY updated_at, id"
_OPEN_COVERING = (
    _SELECT + "WHERE schedule_ids @> ARRAY[$1::text] AND closes_at > now() ORDER BY updated_at, id"
)


@dataclasses.dataclass(frozen=True, slots=True)
class SaleDef:
    """A sale as defined by its last accepted PUT."""

    sale_id: str
    schedules: list[str]
    opens_ms: int
    closes_ms: int
    admit_per_s: int
    max_admitted: int
    idle_s: int
    admission_ttl_s: int


def _instant(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


def _ms(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // _MS


def _row(record: asyncpg.Record) -> SaleDef:
    return SaleDef(
        sale_id=record["id"],
        schedules=list(record["schedule_ids"]),
        opens_ms=_ms(record["opens_at"]),
        closes_ms=_ms(record["closes_at"]),
        admit_per_s=record["admit_per_s"],
        max_admitted=record["max_admitted"],
        idle_s=record["idle_s"],
        admission_ttl_s=record["admission_ttl_s"],
    )


def _args(sale: SaleDef) -> tuple[object, ...]:
    return (
        sale.sale_id,
        sale.schedules,
        _instant(sale.opens_ms),
        _instant(sale.closes_ms),
        sale.admit_per_s,
        sale.max_admitted,
        sale.idle_s,
        sale.admission_ttl_s,
    )


async def get_sale(
    conn: asyncpg.Connection, sale_id: str, for_update: bool = False
) -> SaleDef | None:
    record = await conn.fetchrow(_GET_FOR_UPDATE if for_update else _GET, sale_id)
    return None if record is None else _row(record)


async def _write(conn: asyncpg.Connection, sale: SaleDef) -> None:
    """Insert or update; an identical definition leaves the row (and ``updated_at``) alone."""
    await conn.execute(
        """
        INSERT INTO sales (id, schedule_ids, opens_at, closes_at, admit_per_s, max_admitted,
                           idle_s, admission_ttl_s)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (id) DO UPDATE SET
            schedule_ids = EXCLUDED.schedule_ids,
            opens_at = EXCLUDED.opens_at,
            closes_at = EXCLUDED.closes_at,
            admit_per_s = EXCLUDED.admit_per_s,
            max_admitted = EXCLUDED.max_admitted,
            idle_s = EXCLUDED.idle_s,
            admission_ttl_s = EXCLUDED.admission_ttl_s,
            updated_at = now()
        WHERE (sales.schedule_ids, sales.opens_at, sales.closes_at, sales.admit_per_s,
               sales.max_admitted, sales.idle_s, sales.admission_ttl_s)
              IS DISTINCT FROM
              (EXCLUDED.schedule_ids, EXCLUDED.opens_at, EXCLUDED.closes_at,
               EXCLUDED.admit_per_s, EXCLUDED.max_admitted, EXCLUDED.idle_s,
               EXCLUDED.admission_ttl_s)
        """,
        *_args(sale),
    )


async def upsert_sale(conn: asyncpg.Connection, sale: SaleDef) -> SaleDef | None:
    """Store ``sale`` (one transaction); returns the definition it replaced (None: new)."""
    async with conn.transaction():
        previous = await get_sale(conn, sale.sale_id, for_update=True)
        await _write(conn, sale)
        return previous


async def revert_sale(conn: asyncpg.Connection, written: SaleDef, previous: SaleDef | None) -> bool:
    """Undo ``upsert_sale(written)`` (Redis refused the sale): put ``previous`` back, or delete
    the row when there was none. Only while the row still holds ``written`` (a later PUT wins).
    Returns whether the row was reverted."""
    async with conn.transaction():
        current = await get_sale(conn, written.sale_id, for_update=True)
        if current != written:
            return False
        if previous is None:
            await conn.execute("DELETE FROM sales WHERE id = $1", written.sale_id)
        else:
            await _write(conn, previous)
        return True


async def open_sales(conn: asyncpg.Connection) -> list[SaleDef]:
    """Sales not yet closed (``closes_at`` in the future), oldest definition first."""
    records = await conn.fetch(_OPEN)
    return [_row(r) for r in records]


async def open_sales_covering(conn: asyncpg.Connection, schedule_id: str) -> list[SaleDef]:
    """Sales not yet closed whose schedules include ``schedule_id``, oldest definition first."""
    records = await conn.fetch(_OPEN_COVERING, schedule_id)
    return [_row(r) for r in records]
