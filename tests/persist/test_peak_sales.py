"""The ``sales`` table (peak-sale definitions): upsert, undo of a refused PUT, open sales."""

from __future__ import annotations

import dataclasses
import secrets
import time

import asyncpg

from kai_inventory.persist import peak_sales as pg_sales

HOUR_MS = 3_600_000


def _sale(
    schedules: list[str], opens_in_ms: int, closes_in_ms: int, rate: int = 5
) -> pg_sales.SaleDef:
    now = int(time.time() * 1000)
    return pg_sales.SaleDef(
        sale_id="P" + secrets.token_hex(5),
        schedules=schedules,
        opens_ms=now + opens_in_ms,
        closes_ms=now + closes_in_ms,
        admit_per_s=rate,
        max_admitted=10,
        idle_s=300,
        admission_ttl_s=900,
    )


async def test_upsert_returns_what_it_replaced_and_an_identical_put_leaves_the_row(
    pool: asyncpg.Pool,
) -> None:
    sale = _sale(["A1"], -60_000, HOUR_MS)
    async with pool.acquire() as conn:
        assert await pg_sales.upsert_sale(conn, sale) is None
        assert await pg_sales.get_sale(conn, sale.sale_id) == sale  # times exact to the ms
        stamp = await conn.fetchval("SELECT updated_at FROM sales WHERE id = $1", sale.sale_id)
        assert await pg_sales.upsert_sale(conn, sale) == sale
        same = await conn.fetchval("SELECT updated_at FROM sales WHERE id = $1", sale.sale_id)
        assert same == stamp
        faster = dataclasses.replace(sale, admit_per_s=9)
        assert await pg_sales.upsert_sale(conn, faster) == sale
        assert await pg_sales.get_sale(conn, sale.sale_id) == faster


async def test_revert_puts_the_previous_definition_back_unless_a_later_put_changed_it(
    pool: asyncpg.Pool,
) -> None:
    old = _sale(["A1"], -60_000, HOUR_MS)
    new = dataclasses.replace(old, schedules=["A1", "A2"])
    fresh = _sale(["B1"], 0, HOUR_MS)
    async with pool.acquire() as conn:
        await pg_sales.upsert_sale(conn, old)
        previous = await pg_sales.upsert_sale(conn, new)
        assert await pg_sales.revert_sale(conn, new, previous)
        assert await pg_sales.get_sale(conn, old.sale_id) == old

        assert await pg_sales.upsert_sale(conn, fresh) is None
        assert await pg_sales.revert_sale(conn, fresh, None)  # a refused new sale: no row
        assert await pg_sales.get_sale(conn, fresh.sale_id) is None

        previous = await pg_sales.upsert_sale(conn, new)
        later = dataclasses.replace(new, max_admitted=99)
        await pg_sales.upsert_sale(conn, later)
        assert not await pg_sales.revert_sale(conn, new, previous)
        assert await pg_sales.get_sale(conn, old.sale_id) == later


async def test_open_sales_are_those_not_yet_closed_oldest_first(pool: asyncpg.Pool) -> None:
    schedule = "S" + secrets.token_hex(5)
    first = _sale([schedule, "X"], -HOUR_MS, HOUR_MS)
    second = _sale(["Y"], 60_000, 2 * HOUR_MS)
    closed = _sale([schedule], -2 * HOUR_MS, -HOUR_MS)
    async with pool.acquire() as conn:
        for sale in (first, second, closed):
            await pg_sales.upsert_sale(conn, sale)
        ours = {first.sale_id, second.sale_id, closed.sale_id}
        listed = [s for s in await pg_sales.open_sales(conn) if s.sale_id in ours]
        assert listed == [first, second]
        assert await pg_sales.open_sales_covering(conn, schedule) == [first]
