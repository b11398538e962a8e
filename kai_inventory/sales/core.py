"""Plumbing shared by every sales use case: store access, failure mapping, layouts."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import redis.exceptions

from kai_inventory import metrics
from kai_inventory.domain import (
    ScheduleDef,
    stop_departure,
)
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import Inventory, SoldEntry
from kai_inventory.engine.layout import Layout
from kai_inventory.engine.waiting_room import QCode, SaleConfig, WaitingRoom
from kai_inventory.persist import bookings as pg_bookings
from kai_inventory.persist import catalogue
from kai_inventory.persist import peak_sales as pg_sales
from kai_inventory.persist.db import ACQUIRE_TIMEOUT_S, PG_UNAVAILABLE
from kai_inventory.persist.qr import qr_key
from kai_inventory.resilience import CircuitBreaker
from kai_inventory.sales.outcomes import DependencyUnavailable
from kai_inventory.settings import Settings

log = logging.getLogger(__name__)

REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
CONFIRM_GRACE_MS = 30_000
RECONCILE_OVERLAP = dt.timedelta(seconds=60)  # re-check bookings this far before the last pass
EPOCH_CHECK_S = 1.0

T = TypeVar("T")


class _Refused(Exception):
    """Rolls back a catalogue write when Redis refuses the new layout."""


def build_layout(schedule_id: str, definition: ScheduleDef, timezone: str) -> Layout:
    departures = [
        int(stop_departure(definition, k, timezone).timestamp() * 1000)
        for k in range(len(definition.stops))
    ]
    coaches: list[tuple[int, str, list[str]]] = [
        (c.car, str(c.cls), list(c.seats)) for c in definition.coaches
    ]
    return Layout.build(schedule_id, [s.station for s in definition.stops], departures, coaches)


def sale_config(sale: pg_sales.SaleDef) -> SaleConfig:
    """A stored sale as the engine takes it."""
    return SaleConfig(
        sale_id=sale.sale_id,
        schedules=list(sale.schedules),
        opens_ms=sale.opens_ms,
        closes_ms=sale.closes_ms,
        admit_per_s=sale.admit_per_s,
        max_admitted=sale.max_admitted,
        idle_ms=sale.idle_s * 1000,
        admission_ttl_ms=sale.admission_ttl_s * 1000,
    )


def sale_def(sale: SaleConfig) -> pg_sales.SaleDef:
    """An engine sale as Postgres stores it (durations in whole seconds, as PUT takes them)."""
    return pg_sales.SaleDef(
        sale_id=sale.sale_id,
        schedules=list(sale.schedules),
        opens_ms=sale.opens_ms,
        closes_ms=sale.closes_ms,
        admit_per_s=sale.admit_per_s,
        max_admitted=sale.max_admitted,
        idle_s=sale.idle_ms // 1000,
        admission_ttl_s=sale.admission_ttl_ms // 1000,
    )


def _engine_status(status: str) -> str:
    return status if status in ("scheduled", "delayed", "cancelled") else "cancelled"


# What ``_pg`` answers with 503: an outage, the open circuit (``CircuitOpenError``), or a
# connection the breaker saw die while being set up (both redis ``ConnectionError``s).
_PG_DOWN: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError, *PG_UNAVAILABLE)


def _runs(legs: list[int]) -> list[tuple[int, int]]:
    """Sorted leg numbers -> maximal half-open runs [a, b)."""
    runs: list[tuple[int, int]] = []
    for leg in legs:
        if runs and runs[-1][1] == leg:
            runs[-1] = (runs[-1][0], leg + 1)
        else:
            runs.append((leg, leg + 1))
    return runs


class SalesCore:
    """Plumbing shared by the use cases: the two stores, their failure mapping, layouts."""

    def __init__(
        self,
        settings: Settings,
        inventory: Inventory,
        pool: asyncpg.Pool,
        pg_breaker: CircuitBreaker | None = None,
    ) -> None:
        self.settings = settings
        self.inventory = inventory
        self.pool = pool
        # the waiting room's engine calls (sale PUT and restore); on the engine's connection.
        # The API attaches its own room (``attach_waiting_room``) so that a sale put back by
        # recovery is in that room's schedule -> sale cache at once.
        self._default_room = WaitingRoom(
            inventory.redis,
            inventory.keys,
            settings.jwt_secret,
            scripts=inventory.scripts,
            pipeline=inventory.pipeline,
        )
        self.room = self._default_room
        # one per process, like Redis's: 3 consecutive outages open it for 1 s, then one probe
        self.pg_breaker = pg_breaker or CircuitBreaker("postgres")
        self._tz = zoneinfo.ZoneInfo(settings.timezone)
        self._qr_key = qr_key(settings.jwt_secret)
        self._locks: dict[str, asyncio.Lock] = {}
        self._reconciled_at: dt.datetime | None = None
        self._run_ids: tuple[str, ...] | None = None

    def attach_waiting_room(self, room: WaitingRoom | None) -> None:
        """Use ``room`` for the waiting room's engine calls (None: back to the default)."""
        self.room = self._default_room if room is None else room

    # --- plumbing ---------------------------------------------------------------------------

    async def _pg(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection under the Postgres deadlines (persist/db.py)
        and circuit breaker; an outage, or the open circuit, raises
        ``DependencyUnavailable("postgres")`` (503 with Retry-After).

        Outages (connect, acquire, a statement timing out, a lost connection) count towards
        opening the circuit; any other error means Postgres answered.
        """
        try:
            result: T = await self.pg_breaker.call(
                lambda: self._on_connection(work), outages=PG_UNAVAILABLE
            )
        except _PG_DOWN as exc:
            raise self._pg_down() from exc
        return result

    async def _on_connection(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` on a pooled connection. A connection whose statement met an outage is
        terminated at once: its state is unknown, and releasing it would wait for asyncpg's
        cancel request on a dead link."""
        conn = await self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        try:
            return await work(conn)
        except PG_UNAVAILABLE:
            conn.terminate()
            raise
        finally:
            await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        """Back to the pool; when its reset fails asyncpg terminates it, and what the work
        did (a commit included) stands."""
        try:
            await self.pool.release(conn)
        except PG_UNAVAILABLE as exc:
            log.warning("postgres connection dropped on release: %s", type(exc).__name__)

    @staticmethod
    def _pg_down() -> DependencyUnavailable:
        metrics.DEPENDENCY_ERRORS.labels("postgres").inc()
        return DependencyUnavailable("postgres")

    def _fail_fast_while_pg_open(self) -> None:
        """Raise at once while the Postgres circuit is open (a probe in flight included),
        before a use case touches Redis for an answer that is 503 anyway."""
        if self.pg_breaker.state == "open":
            raise self._pg_down()

    async def _redis(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except REDIS_UNAVAILABLE as exc:
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()
            raise DependencyUnavailable("redis") from exc

    def _layout(self, schedule_id: str, definition: ScheduleDef) -> Layout:
        return build_layout(schedule_id, definition, self.settings.timezone)

    def _today(self) -> dt.date:
        return dt.datetime.now(self._tz).date()

    @staticmethod
    def _entries(layout: Layout, rows: list[pg_bookings.SoldRow]) -> list[SoldEntry]:
        entries: list[SoldEntry] = []
        for row in rows:
            seats = [layout.seat_index(s) for s in row.seats]
            known = [i for i in seats if i is not None]
            if len(known) != len(seats) or row.to_index > layout.n_legs:
                log.error(
                    "booking %s does not fit the layout of %s",
                    row.booking_number,
                    layout.schedule_id,
                )
            if known and row.to_index <= layout.n_legs:
                entries.append((row.from_index, row.to_index, known))
        return entries

    async def _open_from_postgres(
        self, schedule_id: str, trigger: str, restore: bool, with_sales: bool = True
    ) -> bool:
        """Open one schedule in Redis from Postgres with its sold seat-legs; False if unknown.

        ``restore``: also replace the sold bitmap of an inventory that already exists.
        ``with_sales``: first put back the sales not yet closed that cover it (Redis may have
        lost them with the schedule), so its peak-sale gate is there before its inventory;
        a whole rebuild puts every sale back once instead (``Recovery.restore_sales``).
        """

        async def work(
            conn: asyncpg.Connection,
        ) -> tuple[catalogue.ScheduleRow | None, list[pg_bookings.SoldRow], list[pg_sales.SaleDef]]:
            row = await catalogue.get_schedule(conn, schedule_id)
            if row is None:
                return None, [], []
            sales = await pg_sales.open_sales_covering(conn, schedule_id) if with_sales else []
            return row, await pg_bookings.sold_rows(conn, schedule_id), sales

        row, sold_rows, sales = await self._pg(work)
        if row is None:
            return False
        await self._put_sales(sales, trigger)
        layout = self._layout(schedule_id, row.definition)
        entries = self._entries(layout, sold_rows)
        result = await self._redis(
            self.inventory.open(
                layout,
                status=_engine_status(row.status),
                delay_minutes=row.delay_minutes,
                reason=row.delay_reason or "",
                sold=entries,
            )
        )
        if result.code != Code.OK:
            log.error("rebuild of %s refused by Redis: %s", schedule_id, result.code.name)
            return False
        if restore and not result.created:
            code = await self._redis(self.inventory.restore(schedule_id, entries, replace=True))
            if code != Code.OK:
                log.error("restore of %s failed: %s", schedule_id, code.name)
                return False
        metrics.REBUILDS.labels(trigger).inc()
        return True

    async def _put_sales(self, sales: list[pg_sales.SaleDef], trigger: str) -> int:
        """Put stored sales into Redis (the engine call a sale PUT makes; idempotent: a sale
        Redis still has unchanged stays as it is, queue included). Returns how many Redis
        took; a refusal (a schedule claimed by another active sale, opens_at moved after the
        opening) is logged and skipped."""
        done = 0
        for sale in sales:
            result = await self._redis(self.room.put_sale(sale_config(sale)))
            if result.code == QCode.OK:
                done += 1
                if result.created:
                    log.info(
                        "sale %s put back into Redis from Postgres (%s)", sale.sale_id, trigger
                    )
                continue
            if result.code == QCode.SALE_CONFLICT:
                log.error(
                    "sale %s not put back (%s): schedule %s is in active sale %s",
                    sale.sale_id,
                    trigger,
                    result.conflict_schedule,
                    result.conflict_sale,
                )
            else:
                log.error("sale %s not put back (%s): %s", sale.sale_id, trigger, result.code.name)
        return done

    async def _open_ids(self, schedule_id: str | None) -> list[str]:
        async def work(conn: asyncpg.Connection) -> list[str]:
            if schedule_id is not None:
                return await catalogue.open_schedule_ids(conn, dt.date.min, schedule_id)
            return await catalogue.open_schedule_ids(conn, self._today() - dt.timedelta(days=1))

        return await self._pg(work)
