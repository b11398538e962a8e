"""Peak sales (the waiting room) in both stores: the sale PUT, and putting sales back.

Redis runs the waiting room and decides every PUT (the one-active-sale rule, ``opens_at``
frozen once open, created / updated / unchanged); Postgres keeps each accepted definition so
that a Redis that lost its data gets its sales back without an operator (the queue itself,
who waited and who was admitted, is not kept: users join again). See docs/DATA.md.
"""

from __future__ import annotations

import logging

import asyncpg

from kai_inventory.engine.waiting_room import PutSaleResult, QCode, SaleConfig
from kai_inventory.persist import peak_sales as pg_sales
from kai_inventory.sales.core import SalesCore, sale_def
from kai_inventory.sales.outcomes import DependencyUnavailable

log = logging.getLogger(__name__)


class PeakSales(SalesCore):
    """The sale PUT and the sales' restore, over ``self.room`` and the ``sales`` table."""

    async def put_sale(self, sale: SaleConfig) -> PutSaleResult:
        """Postgres first, then Redis (which decides and answers).

        1. The definition is committed in ``sales`` (the one it replaced is kept in hand).
        2. ``WaitingRoom.put_sale`` in Redis: the answer (created / changed / refused).
        3. Redis refused (``SALE_CONFLICT``, ``INVALID_ARGUMENT``): the row is put back as it
           was (deleted when new), unless another PUT of the sale changed it meanwhile.

        Redis unreachable after step 1: 503, and the row stays: the caller retries the PUT
        (idempotent), and if Redis comes back empty, recovery puts the sale in from the row,
        which is what the caller asked for. A sale accepted by Redis is therefore always in
        Postgres (recovery cannot lose it), at the price of a refused one briefly being there.
        """
        self._fail_fast_while_pg_open()
        written = sale_def(sale)

        async def write(conn: asyncpg.Connection) -> pg_sales.SaleDef | None:
            return await pg_sales.upsert_sale(conn, written)

        previous = await self._pg(write)
        result = await self._redis(self.room.put_sale(sale))
        if result.code != QCode.OK:

            async def revert(conn: asyncpg.Connection) -> bool:
                return await pg_sales.revert_sale(conn, written, previous)

            try:
                await self._pg(revert)
            except DependencyUnavailable:
                log.error(
                    "sale %s: refused by Redis (%s) but Postgres keeps the refused definition "
                    "(unreachable to undo it)",
                    sale.sale_id,
                    result.code.name,
                )
        return result

    async def restore_sales(self, trigger: str) -> int:
        """Put every sale not yet closed back into Redis from Postgres (after Redis lost its
        data or restarted); oldest definition first. Returns how many Redis took."""
        sales = await self._pg(pg_sales.open_sales)
        done = await self._put_sales(sales, trigger)
        if sales:
            log.info("put %d of %d open sales back into Redis (%s)", done, len(sales), trigger)
        return done
