"""Recovery: Redis rebuilt and checked from Postgres, without an operator.

Rebuild when Redis lost a schedule or all of its data (the epoch marker), reconcile for single
bookings whose Redis mark-sold did not happen, verify/repair for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

import asyncpg

from kai_inventory import metrics
from kai_inventory.engine.codes import Code
from kai_inventory.engine.layout import Layout
from kai_inventory.engine.views import Snapshot, seat_states
from kai_inventory.persist import bookings as pg_bookings
from kai_inventory.persist import catalogue
from kai_inventory.sales.core import EPOCH_CHECK_S, RECONCILE_OVERLAP, _runs
from kai_inventory.sales.outcomes import DependencyUnavailable, Difference
from kai_inventory.sales.peak_sales import PeakSales

log = logging.getLogger(__name__)


class Recovery(PeakSales):
    """Redis rebuilt and checked from Postgres: rebuild, verify and repair, reconcile, epoch."""

    async def rebuild(
        self,
        schedule_id: str | None = None,
        trigger: str = "operator",
        only: Callable[[str], bool] | None = None,
    ) -> int:
        """Open each schedule not yet departed (since yesterday, any status; or the one named)
        in Redis and set its sold seat-legs from Postgres. Returns how many were rebuilt.
        ``only``: rebuild just the schedules it accepts (Redis Cluster: those on a lost shard).

        The peak sales go back first, so no schedule is open without its sale's gate: a whole
        rebuild puts every sale not yet closed back (``restore_sales``, idempotent: a sale Redis
        still has is left as it is); one schedule's rebuild, the sales that cover it."""
        metrics.REBUILD_IN_PROGRESS.set(1)
        try:
            done = 0
            whole = schedule_id is None
            if whole:
                await self.restore_sales(trigger)
            for sid in await self._open_ids(schedule_id):
                if only is not None and not only(sid):
                    continue
                lock = self._locks.setdefault(sid, asyncio.Lock())
                async with lock:
                    if await self._open_from_postgres(
                        sid, trigger=trigger, restore=True, with_sales=not whole
                    ):
                        done += 1
            return done
        finally:
            metrics.REBUILD_IN_PROGRESS.set(0)

    async def differences(self, schedule_id: str) -> list[Difference]:
        """Where Redis and Postgres disagree on one schedule's sold seat-legs.

        Redis is read first: a seat-leg sold in Redis was committed in Postgres before, so a
        later Postgres read that lacks it means it really is not sold (cancelled)."""
        snap = await self._redis(self.inventory.snapshot(schedule_id))
        layout = await self._redis(self.inventory.layout(schedule_id)) if snap else None

        async def work(conn: asyncpg.Connection) -> list[pg_bookings.SoldRow]:
            return await pg_bookings.sold_rows(conn, schedule_id)

        rows = await self._pg(work)
        if snap is None or layout is None:
            return [Difference(schedule_id, "", 0, 0, "schedule_missing")]
        return self._compare(layout, snap, rows)

    @staticmethod
    def _compare(
        layout: Layout, snap: Snapshot, rows: list[pg_bookings.SoldRow]
    ) -> list[Difference]:
        sold_in_redis = [
            [state == "sold" for state in seat_states(layout, snap, leg, leg + 1)]
            for leg in range(layout.n_legs)
        ]
        expected: dict[int, set[int]] = {}
        diffs: list[Difference] = []
        for row in rows:
            for seat in row.seats:
                index = layout.seat_index(seat)
                if index is None:
                    continue
                legs = range(row.from_index, min(row.to_index, layout.n_legs))
                expected.setdefault(index, set()).update(legs)
                missing = [k for k in legs if not sold_in_redis[k][index]]
                for a, b in _runs(missing):
                    diffs.append(
                        Difference(
                            layout.schedule_id, seat, a, b, "missing_in_redis", row.booking_number
                        )
                    )
        for index in range(layout.n_seats):
            extra = [
                k
                for k in range(layout.n_legs)
                if sold_in_redis[k][index] and k not in expected.get(index, ())
            ]
            for a, b in _runs(extra):
                diffs.append(
                    Difference(layout.schedule_id, layout.seat_ids[index], a, b, "extra_in_redis")
                )
        return diffs

    async def repair(self, schedule_id: str, diffs: list[Difference]) -> int:
        """Make Redis agree with Postgres for these differences; returns bookings re-marked."""
        if any(d.kind == "schedule_missing" for d in diffs):
            await self._open_from_postgres(schedule_id, trigger="reconcile", restore=True)
            return 0
        layout = await self._redis(self.inventory.layout(schedule_id))
        if layout is None:
            return 0
        fixed = 0
        missing = {d.booking_number for d in diffs if d.kind == "missing_in_redis"}
        if missing:

            async def work(conn: asyncpg.Connection) -> list[pg_bookings.SoldRow]:
                return await pg_bookings.sold_rows(conn, schedule_id)

            rows = [r for r in await self._pg(work) if r.booking_number in missing]
            for row in rows:
                # finishes a hold left confirming; a no-op for one already confirmed
                await self._redis(self.inventory.confirm(row.hold_id, row.booking_number))
            entries = self._entries(layout, rows)
            if entries:
                code = await self._redis(
                    self.inventory.restore(schedule_id, entries, replace=False)
                )
                if code == Code.OK:
                    fixed = len(rows)
                else:
                    log.error("repair of %s failed: %s", schedule_id, code.name)
        for d in diffs:
            if d.kind == "extra_in_redis":
                index = layout.seat_index(d.seat)
                if index is not None:
                    await self._redis(self.inventory.cancel(schedule_id, d.a, d.b, [index]))
        if fixed:
            metrics.RECONCILED.inc(fixed)
        return fixed

    async def reconcile(self) -> int:
        """Finish what a failed Redis step left: bookings sold in Postgres but not in Redis get
        marked sold, cancelled seat-legs still sold in Redis get freed. The first pass checks
        every open schedule; later passes only schedules whose bookings changed since (with an
        overlap). Returns how many bookings were marked sold."""

        async def now_and_ids(conn: asyncpg.Connection) -> tuple[dt.datetime, list[str]]:
            now: dt.datetime = await conn.fetchval("SELECT now()")
            if self._reconciled_at is None:
                since = self._today() - dt.timedelta(days=1)
                return now, await catalogue.open_schedule_ids(conn, since)
            return now, await pg_bookings.changed_schedules(
                conn, self._reconciled_at - RECONCILE_OVERLAP
            )

        now, ids = await self._pg(now_and_ids)
        fixed = 0
        for sid in ids:
            diffs = await self.differences(sid)
            if diffs:
                for d in diffs:
                    log.warning("reconcile: %s", d.describe())
                fixed += await self.repair(sid, diffs)
        self._reconciled_at = now
        return fixed

    async def watch_epoch(self, trigger: str = "lost") -> None:
        """One check: when Redis lost its data (an epoch marker is gone), rebuild the open
        schedules it held from Postgres (their peak sales first), then set the marker. One
        Redis has one marker (all schedules); Redis Cluster has one per master, and only that
        shard's schedules are rebuilt."""
        missing = await self._redis(self.inventory.missing_epochs())
        run_ids = await self._redis(self.inventory.run_ids())
        restarted = self._run_ids is not None and run_ids != self._run_ids
        self._run_ids = run_ids
        if restarted and not missing:
            # Restarted with its data, perhaps an older copy: put every sale back and move each
            # schedule's version past anything published before the restart.
            log.warning("Redis restarted: rebuilding open schedules from Postgres")
            count = await self.rebuild(trigger="restart")
            log.info("rebuilt %d schedules", count)
            return
        if not missing:
            return
        log.warning(
            "Redis epoch marker missing (%s): rebuilding its open schedules from Postgres",
            ", ".join(missing),
        )
        count = await self.rebuild(trigger=trigger, only=self.inventory.on_markers_shards(missing))
        await self._redis(self.inventory.set_epoch(missing))
        log.info("rebuilt %d schedules", count)

    async def run_background(self, stop: asyncio.Event) -> None:
        """Start-up rebuild check and reconcile, then an epoch check every second and a
        reconcile every ``reconcile_interval_s`` until ``stop`` is set."""
        first = True
        last_reconcile = -float("inf")
        while not stop.is_set():
            try:
                await self.watch_epoch(trigger="startup" if first else "lost")
                first = False
                if time.monotonic() - last_reconcile >= self.settings.reconcile_interval_s:
                    await self.reconcile()
                    last_reconcile = time.monotonic()
            except DependencyUnavailable as exc:
                log.warning("background recovery: %s", exc)
            except Exception:
                log.exception("background recovery failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=EPOCH_CHECK_S)
