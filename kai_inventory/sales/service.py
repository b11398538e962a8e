"""The sales use cases: catalogue writes, reads joined with live availability, confirm, cancel.

A seat-leg is marked sold in Redis only after its booking committed in Postgres; see
docs/DATA.md for the confirm sequence and what happens on each failure along it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import logging
import os
import signal
import time

import asyncpg
import msgspec

from kai_inventory import metrics
from kai_inventory.domain import (
    Booking,
    ConfirmRequest,
    ScheduleDef,
    Train,
)
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import Hold, schedule_of_hold
from kai_inventory.engine.layout import Layout
from kai_inventory.engine.views import ClassAvailability, availability
from kai_inventory.persist import bookings as pg_bookings
from kai_inventory.persist import catalogue
from kai_inventory.persist.qr import sign_qr
from kai_inventory.sales.core import (
    CONFIRM_GRACE_MS,
    REDIS_UNAVAILABLE,
    _engine_status,
    _Refused,
)
from kai_inventory.sales.outcomes import (
    CancelOutcome,
    ConfirmOutcome,
    DependencyUnavailable,
    PutOutcome,
    ScheduleView,
    SearchResult,
    StopTime,
)
from kai_inventory.sales.recovery import Recovery

log = logging.getLogger(__name__)


class Sales(Recovery):
    """The use cases the API and WebSocket front call (and recovery, inherited)."""

    async def put_schedule(self, schedule_id: str, definition: ScheduleDef) -> PutOutcome:
        """Catalogue rows in one transaction, then the inventory opened in Redis.

        Redis is opened before the commit, so a refusal there (live holds under a new layout)
        rolls the rows back; a commit that fails after Redis opened leaves Redis ahead, which
        the next put or rebuild corrects (both open the layout Postgres holds).
        """
        layout = self._layout(schedule_id, definition)

        async def work(conn: asyncpg.Connection) -> PutOutcome:
            async with conn.transaction():
                await catalogue.lock_schedule_id(conn, schedule_id)
                row = await catalogue.get_schedule(conn, schedule_id, for_update=True)
                if row is not None and row.definition == definition:
                    outcome = PutOutcome.UNCHANGED
                else:
                    if (
                        row is not None
                        and row.layout_hash != catalogue.layout_hash(definition)
                        and await catalogue.has_live_tickets(conn, schedule_id)
                    ):
                        return PutOutcome.IN_USE
                    await catalogue.write_schedule(
                        conn, schedule_id, definition, self.settings.timezone
                    )
                    outcome = PutOutcome.CREATED if row is None else PutOutcome.REPLACED
                sold = self._entries(layout, await pg_bookings.sold_rows(conn, schedule_id))
                status = "scheduled" if row is None else row.status
                result = await self._redis(
                    self.inventory.open(
                        layout,
                        status=_engine_status(status),
                        delay_minutes=0 if row is None else row.delay_minutes,
                        reason="" if row is None else row.delay_reason or "",
                        sold=sold,
                    )
                )
                if result.code == Code.SCHEDULE_IN_USE:
                    raise _Refused
                if result.code != Code.OK:
                    raise RuntimeError(f"opening {schedule_id} in Redis failed: {result.code!r}")
                return outcome

        try:
            return await self._pg(work)
        except _Refused:
            return PutOutcome.IN_USE

    async def set_status(
        self, schedule_id: str, status: str, delay_minutes: int, reason: str | None
    ) -> bool:
        """Postgres first (the truth), then Redis (pushes the change to subscribers)."""

        async def work(conn: asyncpg.Connection) -> bool:
            return await catalogue.set_status(conn, schedule_id, status, delay_minutes, reason)

        if not await self._pg(work):
            return False
        code = await self._redis(
            self.inventory.set_status(schedule_id, status, delay_minutes, reason or "")
        )
        if code == Code.SCHEDULE_NOT_FOUND:
            await self.ensure_schedule(schedule_id)  # reopened with the new status
        return True

    async def ensure_schedule(self, schedule_id: str) -> Layout | None:
        """The Redis layout; when Redis lost the schedule but Postgres has it, reopen it with
        its sold seat-legs first (rebuild on demand). None when no store knows it."""
        if await self._redis(self.inventory.snapshot(schedule_id)) is not None:
            layout = await self._redis(self.inventory.layout(schedule_id))
            if layout is not None:
                return layout
        lock = self._locks.setdefault(schedule_id, asyncio.Lock())
        async with lock:
            if await self._redis(self.inventory.snapshot(schedule_id)) is None:
                await self._open_from_postgres(schedule_id, trigger="lost", restore=False)
            return await self._redis(self.inventory.layout(schedule_id))

    # --- reads ------------------------------------------------------------------------------

    async def search(self, from_station: str, to_station: str, date: dt.date) -> list[SearchResult]:
        """Schedules leaving ``from_station`` on ``date`` (local) that call later at ``to``."""

        async def work(conn: asyncpg.Connection) -> list[catalogue.SearchRow]:
            return await catalogue.search(conn, from_station, to_station, date)

        rows = await self._pg(work)

        async def one(row: catalogue.SearchRow) -> SearchResult:
            layout = await self.ensure_schedule(row.schedule_id)
            snap = await self._redis(self.inventory.snapshot(row.schedule_id))
            classes: list[ClassAvailability] = []
            status = row.status
            if layout is not None and snap is not None:
                classes = availability(layout, snap, row.from_index, row.to_index)
                status = snap.status
            return SearchResult(
                schedule_id=row.schedule_id,
                train=Train(row.train_number, row.train_name, row.train_type),  # type: ignore[arg-type]
                status=status,
                from_=StopTime(row.from_station, departure=row.departure),
                to=StopTime(row.to_station, arrival=row.arrival),
                classes=classes,
            )

        return list(await asyncio.gather(*(one(r) for r in rows)))

    async def get_schedule(self, schedule_id: str) -> ScheduleView | None:
        async def work(conn: asyncpg.Connection) -> catalogue.ScheduleRow | None:
            return await catalogue.get_schedule(conn, schedule_id)

        row = await self._pg(work)
        if row is None:
            return None
        definition = row.definition
        stops = [
            s
            if s.name is not None or s.station not in row.station_names
            else msgspec.structs.replace(s, name=row.station_names[s.station])
            for s in definition.stops
        ]
        return ScheduleView(
            schedule_id=schedule_id,
            status=row.status,
            delay_minutes=row.delay_minutes,
            reason=row.delay_reason,
            train=definition.train,
            departure_date=definition.departure_date,
            stops=stops,
            coaches=list(definition.coaches),
        )

    async def get_booking(self, booking_number: str, user: str | None) -> Booking | None:
        async def work(conn: asyncpg.Connection) -> pg_bookings.BookingRecord | None:
            return await pg_bookings.get_booking(conn, booking_number)

        record = await self._pg(work)
        if record is None or (user is not None and record.booking.user != user):
            return None
        return record.booking

    async def booked_hold(self, hold_id: str, user: str | None) -> pg_bookings.BookingRecord | None:
        """The booking a hold was confirmed into (``user``'s, or anyone's for None): what shows
        the hold once Redis has lost it (a restart without persistence, a failover)."""

        async def work(conn: asyncpg.Connection) -> pg_bookings.BookingRecord | None:
            return await pg_bookings.get_booking(conn, hold_id=hold_id)

        record = await self._pg(work)
        if record is None or (user is not None and record.booking.user != user):
            return None
        return record

    # --- confirm ----------------------------------------------------------------------------

    async def confirm(
        self, hold_id: str, user: str | None, request: ConfirmRequest
    ) -> ConfirmOutcome:
        """Redis decides in time, Postgres commits the sale, Redis marks it sold.

        1. ``confirm_begin``: the hold moves held -> confirming only if not past expires_at
           (else 410/409/404); its deadline becomes now + grace, so the reaper leaves it alone.
        2. Passengers must match the held seats one-to-one (else ``confirm_abort``, 422).
        3. One Postgres transaction, unique by hold id (a retry reads the first booking back).
           Postgres unreachable: ``confirm_abort`` (held again until it expires), 503.
        4. ``confirm``: seat-legs marked sold. If Redis fails here the sale stands: the booking is
           returned and reconcile (on retry, at start-up, periodically) marks it sold.

        While the Postgres circuit is open the answer is 503 before step 1, so the hold is left
        exactly as it was; a circuit that opens between steps 1 and 3 takes the step-3 path.
        """
        self._fail_fast_while_pg_open()
        started = time.perf_counter()
        code, hold = await self._redis(
            self.inventory.confirm_begin(hold_id, user, grace_ms=CONFIRM_GRACE_MS)
        )
        redis_s = time.perf_counter() - started
        if code != Code.OK or hold is None:
            return await self._confirm_refused(hold_id, user, code)
        layout = await self._redis(self.inventory.layout(hold.schedule_id))
        if layout is None:
            await self._abort(hold_id)
            return ConfirmOutcome(Code.HOLD_NOT_FOUND)
        problem = self._match_passengers(layout, hold, request)
        if problem:
            await self._abort(hold_id)
            return ConfirmOutcome(Code.INVALID_ARGUMENT, detail=problem)
        draft = self._draft(layout, hold, request)
        pg_started = time.perf_counter()

        async def work(conn: asyncpg.Connection) -> tuple[pg_bookings.BookingRecord, bool]:
            return await pg_bookings.insert_booking(conn, draft)

        try:
            record, created = await self._pg(work)
        except DependencyUnavailable:
            await self._abort(hold_id)
            raise
        except asyncpg.ExclusionViolationError:
            # Redis let a seat-leg be held that Postgres has sold: Redis is stale. Rebuild it
            # from Postgres and refuse this confirm.
            await self._abort(hold_id)
            log.error("confirm %s: seat-leg already sold in Postgres; rebuilding", hold_id)
            await self._open_from_postgres(hold.schedule_id, trigger="reconcile", restore=True)
            return ConfirmOutcome(
                Code.SEATS_UNAVAILABLE, detail="a held seat is already sold on these legs"
            )
        except pg_bookings.SeatNotOnTrain as exc:
            await self._abort(hold_id)
            return ConfirmOutcome(Code.INVALID_ARGUMENT, detail=f"seats not on this train: {exc}")
        metrics.CONFIRM_DURATION.labels(part="postgres").observe(time.perf_counter() - pg_started)
        _fault_crash_after_commit()
        if created:
            metrics.BOOKINGS.labels(outcome="confirmed").inc()
        redis_started = time.perf_counter()
        await self._mark_sold(hold_id, record.booking.booking_number)
        redis_s += time.perf_counter() - redis_started
        metrics.CONFIRM_DURATION.labels(part="redis").observe(redis_s)
        return ConfirmOutcome(Code.OK, booking=record.booking, created=created)

    async def _abort(self, hold_id: str) -> None:
        try:
            await self.inventory.confirm_abort(hold_id)
        except REDIS_UNAVAILABLE:
            log.warning("confirm_abort %s failed: Redis unreachable; the hold will expire", hold_id)

    async def _mark_sold(self, hold_id: str, booking_number: str) -> bool:
        try:
            code = await self.inventory.confirm(hold_id, booking_number)
        except REDIS_UNAVAILABLE:
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()
            log.warning(
                "booking %s committed; Redis unreachable, reconcile will mark it sold",
                booking_number,
            )
            return False
        if code != Code.OK:
            log.warning("booking %s: Redis confirm answered %s", booking_number, code.name)
            return False
        return True

    async def _confirm_refused(self, hold_id: str, user: str | None, code: Code) -> ConfirmOutcome:
        """Redis refused to begin: a committed booking for this hold still wins (retry after a
        Redis failure, or after Redis lost the hold); reconcile it and answer with it."""
        if schedule_of_hold(hold_id) is None:
            return ConfirmOutcome(Code.HOLD_NOT_FOUND)
        record = await self.booked_hold(hold_id, user)
        if record is None:
            if code == Code.HOLD_CONFIRMED:  # Redis says confirmed, Postgres disagrees
                return ConfirmOutcome(Code.HOLD_NOT_FOUND)
            return ConfirmOutcome(code if code != Code.OK else Code.HOLD_NOT_FOUND)
        if (
            code != Code.HOLD_CONFIRMED
            and record.booking.status == "confirmed"
            and await self._mark_sold(hold_id, record.booking.booking_number)
        ):
            metrics.RECONCILED.inc()
        return ConfirmOutcome(Code.OK, booking=record.booking, created=False)

    @staticmethod
    def _match_passengers(layout: Layout, hold: Hold, request: ConfirmRequest) -> str:
        held = [layout.seat_ids[i] for i in hold.seats if 0 <= i < layout.n_seats]
        given = [p.seat for p in request.passengers]
        if len(set(given)) != len(given):
            return "a seat is named for more than one passenger"
        missing = sorted(set(held) - set(given))
        extra = sorted(set(given) - set(held))
        if extra:
            return f"seats not in this hold: {', '.join(extra)}"
        if missing:
            return f"one passenger per held seat; no passenger for: {', '.join(missing)}"
        return ""

    def _draft(
        self, layout: Layout, hold: Hold, request: ConfirmRequest
    ) -> pg_bookings.BookingDraft:
        booking_number = pg_bookings.new_booking_number()
        from_station, to_station = layout.stops[hold.a], layout.stops[hold.b]
        departs = layout.departures_ms[hold.a] // 1000
        tickets: list[pg_bookings.TicketDraft] = []
        for n, passenger in enumerate(request.passengers, start=1):
            car, _, label = passenger.seat.partition("-")
            ticket_number = f"{booking_number}-{n:02d}"
            payload = {
                "v": 1,
                "tn": ticket_number,
                "bn": booking_number,
                "sch": hold.schedule_id,
                "seat": passenger.seat,
                "from": from_station,
                "to": to_station,
                "dep": departs,
                "name": passenger.name,
                "id4": passenger.id_number[-4:],
            }
            tickets.append(
                pg_bookings.TicketDraft(
                    car=int(car),
                    label=label,
                    passenger_name=passenger.name,
                    id_number=passenger.id_number,
                    passenger_type=passenger.type,
                    ticket_number=ticket_number,
                    qr=sign_qr(self._qr_key, payload),
                )
            )
        return pg_bookings.BookingDraft(
            booking_number=booking_number,
            hold_id=hold.hold_id,
            user=hold.user,
            schedule_id=hold.schedule_id,
            from_index=hold.a,
            to_index=hold.b,
            from_station=from_station,
            to_station=to_station,
            tickets=tickets,
            payment_method=request.payment.method,
            payment_reference=request.payment.reference,
            payment_amount=decimal.Decimal(request.payment.amount),
            hold_expires_ms=hold.expires_ms,
        )

    # --- cancel -----------------------------------------------------------------------------

    async def cancel(self, booking_number: str, user: str | None) -> CancelOutcome:
        """Refund, tickets and booking cancelled in Postgres, then the seat-legs freed in Redis.
        A second cancel answers the same refund and touches nothing."""

        async def work(
            conn: asyncpg.Connection,
        ) -> tuple[pg_bookings.BookingRecord | None, bool]:
            return await pg_bookings.cancel_booking(conn, booking_number, user)

        record, changed = await self._pg(work)
        if record is None:
            return CancelOutcome(Code.HOLD_NOT_FOUND)
        if changed:
            metrics.BOOKINGS.labels(outcome="cancelled").inc()
            await self._free(record)
        return CancelOutcome(Code.OK, booking=record.booking, refund=record.refund)

    async def _free(self, record: pg_bookings.BookingRecord) -> None:
        booking = record.booking
        try:
            layout = await self.inventory.layout(booking.schedule_id)
            if layout is None:
                return  # not open in Redis: a rebuild reads Postgres, where it is cancelled
            seats = [layout.seat_index(t.seat) for t in booking.tickets]
            code = await self.inventory.cancel(
                booking.schedule_id,
                record.from_index,
                record.to_index,
                [i for i in seats if i is not None],
            )
            if code not in (Code.OK, Code.NOT_SOLD):
                log.warning("cancel %s: Redis answered %s", booking.booking_number, code.name)
        except REDIS_UNAVAILABLE:
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()
            log.warning(
                "cancel %s committed; Redis unreachable, reconcile will free the seats",
                booking.booking_number,
            )


def _fault_crash_after_commit() -> None:
    """Test-only fault hook (F6 in docs/RELIABILITY.md): when ``KAI_FAULT_CRASH_AFTER_COMMIT``
    names a file and that file exists, the process that removes it SIGKILLs itself right after
    the booking committed and before Redis marks it sold. Unset in production: one lookup."""
    trigger = os.environ.get("KAI_FAULT_CRASH_AFTER_COMMIT")
    if not trigger:
        return
    try:
        os.remove(trigger)
    except OSError:
        return  # not armed, or another worker took it
    os.kill(os.getpid(), signal.SIGKILL)
