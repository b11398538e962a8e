"""Bookings: the confirm transaction (idempotent by hold id), reads, cancellations, and the
live seat-legs of a schedule for rebuilds.

Every function here runs SQL only; the caller (``sales``) owns the Redis side.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import secrets

import asyncpg
import msgspec

from kai_inventory.domain import Booking, Refund, Ticket

_JSON = msgspec.json.Encoder(order="sorted")


def new_booking_number() -> str:
    """ "KAI" + 10 base32 characters (50 random bits): unique by constraint, not guessable."""
    return "KAI" + base64.b32encode(secrets.token_bytes(10)).decode()[:10]


def new_refund_reference() -> str:
    return "RF" + base64.b32encode(secrets.token_bytes(10)).decode()[:12]


@dataclasses.dataclass(frozen=True, slots=True)
class TicketDraft:
    car: int
    label: str
    passenger_name: str
    id_number: str
    passenger_type: str
    ticket_number: str
    qr: str

    @property
    def seat(self) -> str:
        return f"{self.car}-{self.label}"


@dataclasses.dataclass(frozen=True, slots=True)
class BookingDraft:
    booking_number: str
    hold_id: str
    user: str
    schedule_id: str
    from_index: int
    to_index: int
    from_station: str
    to_station: str
    tickets: list[TicketDraft]
    payment_method: str
    payment_reference: str
    payment_amount: decimal.Decimal
    hold_expires_ms: int | None = None  # kept so the hold can be shown after Redis lost it


@dataclasses.dataclass(frozen=True, slots=True)
class BookingRecord:
    booking: Booking
    from_index: int
    to_index: int
    refund: Refund | None
    # the hold's expires_at (epoch ms); for bookings written before it was kept: booking time
    hold_expires_ms: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SoldRow:
    hold_id: str
    booking_number: str
    from_index: int
    to_index: int
    seats: list[str]  # seat ids "<car>-<label>"


class SeatNotOnTrain(LookupError):
    """A drafted ticket names a seat the schedule's train has no row for."""


async def insert_booking(
    conn: asyncpg.Connection, draft: BookingDraft
) -> tuple[BookingRecord, bool]:
    """Write booking, passengers, tickets, payment and audit row in one transaction.

    Returns (record, created). A second call with the same hold id writes nothing and returns
    the first booking with created False (also when two calls race: the loser waits on the
    unique index, then reads the winner's row). A seat-leg already sold raises
    ``asyncpg.ExclusionViolationError`` (SQLSTATE 23P01) and nothing is written.
    """
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", draft.user
        )
        # each seat's row and its price: the base price of its coach in this schedule
        seat_rows = await conn.fetch(
            """
            SELECT se.id, se.car_number, se.seat_number,
                   coalesce((SELECT (c ->> 'base_price')::numeric
                             FROM jsonb_array_elements(sc.coaches) AS c
                             WHERE (c ->> 'car')::int = se.car_number LIMIT 1), 0) AS price
            FROM seats se
            JOIN schedules sc ON sc.train_id = se.train_id AND sc.id = $1
            JOIN unnest($2::int[], $3::text[]) AS u(car, label)
              ON se.car_number = u.car AND se.seat_number = u.label
            """,
            draft.schedule_id,
            [t.car for t in draft.tickets],
            [t.label for t in draft.tickets],
        )
        seat_ids = {(r["car_number"], r["seat_number"]): r["id"] for r in seat_rows}
        prices = {(r["car_number"], r["seat_number"]): r["price"] for r in seat_rows}
        missing = [t.seat for t in draft.tickets if (t.car, t.label) not in seat_ids]
        if missing:
            raise SeatNotOnTrain(", ".join(missing))
        seat_of = [seat_ids[(t.car, t.label)] for t in draft.tickets]
        price_of = [prices[(t.car, t.label)] for t in draft.tickets]
        total = sum(price_of, decimal.Decimal(0))
        booking_id: int | None = await conn.fetchval(
            """
            INSERT INTO bookings (booking_number, hold_id, user_id, schedule_id, from_index,
                                  to_index, from_station, to_station, status, total_amount,
                                  discount_amount, final_amount, passenger_count,
                                  booking_details)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'confirmed', $9, 0, $9, $10, $11::jsonb)
            ON CONFLICT (hold_id) DO NOTHING
            RETURNING id
            """,
            draft.booking_number,
            draft.hold_id,
            draft.user,
            draft.schedule_id,
            draft.from_index,
            draft.to_index,
            draft.from_station,
            draft.to_station,
            total,
            len(draft.tickets),
            _JSON.encode(
                {
                    "from": draft.from_station,
                    "to": draft.to_station,
                    "hold_expires_ms": draft.hold_expires_ms,
                }
            ).decode(),
        )
        if booking_id is None:
            existing = await get_booking(conn, hold_id=draft.hold_id)
            if existing is None:  # the conflicting row is committed: we waited for it
                raise RuntimeError(f"booking for hold {draft.hold_id} vanished")
            return existing, False
        passenger_rows = await conn.fetch(
            """
            INSERT INTO passengers (booking_id, passenger_name, passenger_type, identity_number,
                                    seat_id, ticket_price)
            SELECT $1, name, ptype::passenger_type, idn, seat, price
            FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::numeric[])
                 WITH ORDINALITY AS u(name, ptype, idn, seat, price, n)
            ORDER BY n
            RETURNING id
            """,
            booking_id,
            [t.passenger_name for t in draft.tickets],
            [t.passenger_type for t in draft.tickets],
            [t.id_number for t in draft.tickets],
            seat_of,
            price_of,
        )
        passenger_ids = sorted(r["id"] for r in passenger_rows)  # identities grow in insert order
        await conn.execute(
            """
            INSERT INTO tickets (booking_id, passenger_id, schedule_id, seat_id, from_index,
                                 to_index, ticket_number, qr_code)
            SELECT $1, pid, $2, seat, $3, $4, tn, qr
            FROM unnest($5::bigint[], $6::bigint[], $7::text[], $8::text[]) AS u(pid, seat, tn, qr)
            """,
            booking_id,
            draft.schedule_id,
            draft.from_index,
            draft.to_index,
            passenger_ids,
            seat_of,
            [t.ticket_number for t in draft.tickets],
            [t.qr for t in draft.tickets],
        )
        await conn.execute(
            """
            INSERT INTO payments (booking_id, payment_reference, payment_method, payment_status,
                                  amount)
            VALUES ($1, $2, $3::payment_method, 'completed', $4)
            """,
            booking_id,
            draft.payment_reference,
            draft.payment_method,
            draft.payment_amount,
        )
        await _audit(
            conn,
            draft.user,
            draft.booking_number,
            "create",
            None,
            {
                "status": "confirmed",
                "hold_id": draft.hold_id,
                "schedule_id": draft.schedule_id,
                "seats": [t.seat for t in draft.tickets],
                "legs": [draft.from_index, draft.to_index],
            },
        )
    booking = Booking(
        booking_number=draft.booking_number,
        hold_id=draft.hold_id,
        schedule_id=draft.schedule_id,
        from_=draft.from_station,
        to=draft.to_station,
        status="confirmed",
        tickets=[Ticket(t.ticket_number, t.seat, t.passenger_name, t.qr) for t in draft.tickets],
        user=draft.user,
    )
    return BookingRecord(booking, draft.from_index, draft.to_index, None), True


async def _audit(
    conn: asyncpg.Connection,
    user: str | None,
    booking_number: str,
    action: str,
    old: dict[str, object] | None,
    new: dict[str, object],
) -> None:
    await conn.execute(
        """
        INSERT INTO audit_logs (user_id, entity_type, entity_id, action, old_values, new_values)
        VALUES ($1, 'booking', $2, $3::audit_action, $4::jsonb, $5::jsonb)
        """,
        user,
        booking_number,
        action,
        None if old is None else _JSON.encode(old).decode(),
        _JSON.encode(new).decode(),
    )


_BOOKING_SQL = """
SELECT b.id, b.booking_number, b.hold_id, b.user_id, b.schedule_id, b.from_index, b.to_index,
       b.from_station, b.to_station, b.status::text AS status,
       coalesce((b.booking_details ->> 'hold_expires_ms')::bigint,
                (extract(epoch FROM b.booking_date) * 1000)::bigint) AS hold_expires_ms
FROM bookings b
"""
_BY_NUMBER = _BOOKING_SQL + "WHERE b.booking_number = $1"
_BY_HOLD = _BOOKING_SQL + "WHERE b.hold_id = $1"


async def get_booking(
    conn: asyncpg.Connection, booking_number: str | None = None, *, hold_id: str | None = None
) -> BookingRecord | None:
    """By booking number, or by hold id."""
    if booking_number is not None:
        row = await conn.fetchrow(_BY_NUMBER, booking_number)
    else:
        row = await conn.fetchrow(_BY_HOLD, hold_id)
    if row is None:
        return None
    tickets = await conn.fetch(
        """
        SELECT t.ticket_number, se.car_number || '-' || se.seat_number AS seat,
               p.passenger_name, t.qr_code
        FROM tickets t JOIN passengers p ON p.id = t.passenger_id
        JOIN seats se ON se.id = t.seat_id
        WHERE t.booking_id = $1 ORDER BY t.id
        """,
        row["id"],
    )
    refund_row = await conn.fetchrow(
        """
        SELECT r.refund_reference, r.refund_amount::text AS amount,
               r.refund_status::text AS status, r.refund_reason::text AS reason
        FROM refunds r JOIN payments p ON p.id = r.payment_id
        WHERE p.booking_id = $1 ORDER BY r.id LIMIT 1
        """,
        row["id"],
    )
    refund = None
    if refund_row is not None:
        refund = Refund(
            refund_reference=refund_row["refund_reference"],
            amount=_money(refund_row["amount"]),
            status=refund_row["status"],
            reason=refund_row["reason"],
        )
    booking = Booking(
        booking_number=row["booking_number"],
        hold_id=row["hold_id"],
        schedule_id=row["schedule_id"],
        from_=row["from_station"],
        to=row["to_station"],
        status="cancelled" if row["status"] == "cancelled" else "confirmed",
        tickets=[
            Ticket(r["ticket_number"], r["seat"], r["passenger_name"], r["qr_code"])
            for r in tickets
        ],
        user=row["user_id"],
    )
    return BookingRecord(
        booking, row["from_index"], row["to_index"], refund, row["hold_expires_ms"]
    )


def _money(text: str) -> str:
    """ "450000.00" -> "450000"; "12.50" stays."""
    value = decimal.Decimal(text)
    return str(value.quantize(decimal.Decimal(1))) if value == value.to_integral() else str(value)


async def cancel_booking(
    conn: asyncpg.Connection, booking_number: str, user: str | None
) -> tuple[BookingRecord | None, bool]:
    """Cancel a booking: tickets and booking cancelled, payment refunded, refund and audit rows.

    Returns (record, changed); (None, False) when the booking does not exist or belongs to
    another user (``user`` None: admin). Cancelling a cancelled booking changes nothing.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, user_id, status::text AS status FROM bookings WHERE booking_number = $1"
            " FOR UPDATE",
            booking_number,
        )
        if row is None or (user is not None and row["user_id"] != user):
            return None, False
        if row["status"] == "cancelled":
            return await get_booking(conn, booking_number), False
        await conn.execute(
            "UPDATE tickets SET ticket_status = 'cancelled', updated_at = now()"
            " WHERE booking_id = $1 AND ticket_status <> 'cancelled'",
            row["id"],
        )
        await conn.execute(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = now(), updated_at = now()"
            " WHERE id = $1",
            row["id"],
        )
        payments = await conn.fetch(
            """
            UPDATE payments SET payment_status = 'refunded', updated_at = now()
            WHERE booking_id = $1 RETURNING id, amount, payment_method::text AS method
            """,
            row["id"],
        )
        for payment in payments:
            await conn.execute(
                """
                INSERT INTO refunds (payment_id, refund_reference, refund_reason, refund_amount,
                                     refund_status, refund_method, refund_date)
                VALUES ($1, $2, 'cancellation', $3, 'completed', $4, now())
                """,
                payment["id"],
                new_refund_reference(),
                payment["amount"],
                payment["method"],
            )
        await _audit(
            conn, user, booking_number, "update", {"status": row["status"]}, {"status": "cancelled"}
        )
        return await get_booking(conn, booking_number), True


async def sold_rows(conn: asyncpg.Connection | asyncpg.Pool, schedule_id: str) -> list[SoldRow]:
    """The live (not cancelled) tickets of a schedule, one row per booking."""
    rows = await conn.fetch(
        """
        SELECT b.hold_id, b.booking_number, t.from_index, t.to_index,
               array_agg(se.car_number || '-' || se.seat_number ORDER BY t.id) AS seats
        FROM tickets t
        JOIN bookings b ON b.id = t.booking_id
        JOIN seats se ON se.id = t.seat_id
        WHERE t.schedule_id = $1 AND t.ticket_status <> 'cancelled'
        GROUP BY b.id, t.from_index, t.to_index
        ORDER BY b.id
        """,
        schedule_id,
    )
    return [
        SoldRow(r["hold_id"], r["booking_number"], r["from_index"], r["to_index"], list(r["seats"]))
        for r in rows
    ]


async def changed_schedules(
    conn: asyncpg.Connection | asyncpg.Pool, since: dt.datetime
) -> list[str]:
    """Schedules with a booking created or changed at or after ``since``."""
    rows = await conn.fetch(
        "SELECT DISTINCT schedule_id FROM bookings WHERE updated_at >= $1", since
    )
    return [r["schedule_id"] for r in rows]
