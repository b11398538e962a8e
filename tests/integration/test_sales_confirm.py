"""Confirm and cancel across Redis and Postgres, including each failure along the way."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis.exceptions
from sales_helpers import definition, hold, new_id, request, try_hold

from kai_inventory import metrics
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import Inventory
from kai_inventory.sales import DependencyUnavailable, PutOutcome, Sales, verify_qr


async def _open(sales: Sales) -> str:
    schedule_id = new_id()
    assert await sales.put_schedule(schedule_id, definition()) is PutOutcome.CREATED
    return schedule_id


async def test_confirm_commits_booking_tickets_payment_and_audit_then_marks_seats_sold(sales, pool):
    schedule_id = await _open(sales)
    h = await hold(sales, schedule_id, ["1-1A", "1-1B"], a=0, b=2)
    outcome = await sales.confirm(h.hold_id, "u1", request(["1-1A", "1-1B"], "900000"))
    assert outcome.code == Code.OK
    assert outcome.created
    booking = outcome.booking
    assert booking is not None
    assert booking.booking_number.startswith("KAI")
    assert len(booking.booking_number) == 13
    assert (booking.from_, booking.to, booking.status) == ("GMR", "PWT", "confirmed")
    assert sorted(t.seat for t in booking.tickets) == ["1-1A", "1-1B"]
    payload = verify_qr(sales.settings, booking.tickets[0].qr)
    assert payload is not None
    assert payload["tn"] == booking.tickets[0].ticket_number
    assert payload["bn"] == booking.booking_number
    assert payload["sch"] == schedule_id
    forged = booking.tickets[0].qr[:-2] + (
        "AA" if not booking.tickets[0].qr.endswith("AA") else "BB"
    )
    assert verify_qr(sales.settings, forged) is None
    other_key = sales.settings.replace(jwt_secret="another-secret-0123456789")
    assert verify_qr(other_key, booking.tickets[0].qr) is None

    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, user_id, total_amount, passenger_count FROM bookings WHERE hold_id = $1",
            h.hold_id,
        )
        assert (row["user_id"], int(row["total_amount"]), row["passenger_count"]) == (
            "u1",
            900000,
            2,
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM tickets WHERE booking_id = $1 AND legs = int4range(0, 2)",
                row["id"],
            )
            == 2
        )
        assert (
            await conn.fetchval(
                "SELECT payment_status::text FROM payments WHERE booking_id = $1", row["id"]
            )
            == "completed"
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM audit_logs WHERE entity_id = $1 AND action = 'create'",
                booking.booking_number,
            )
            == 1
        )

    assert (await sales.inventory.get_hold(h.hold_id)).status == "confirmed"
    assert await try_hold(sales, schedule_id, ["1-1A"], 1, 2) == Code.SEATS_UNAVAILABLE
    assert await try_hold(sales, schedule_id, ["1-1A"], 2, 3) == Code.OK  # PWT -> YK is free
    assert await sales.get_booking(booking.booking_number, "u1") == booking
    assert await sales.get_booking(booking.booking_number, None) == booking
    assert await sales.get_booking(booking.booking_number, "someone-else") is None


async def test_a_retried_or_concurrent_confirm_returns_the_same_booking_once(sales, pool):
    schedule_id = await _open(sales)
    h = await hold(sales, schedule_id, ["1-1C"])
    first, second = await asyncio.gather(
        sales.confirm(h.hold_id, "u1", request(["1-1C"])),
        sales.confirm(h.hold_id, "u1", request(["1-1C"])),
    )
    assert {first.code, second.code} == {Code.OK}
    assert sorted([first.created, second.created]) == [False, True]
    assert first.booking == second.booking
    again = await sales.confirm(h.hold_id, "u1", request(["1-1C"]))
    assert (again.code, again.created, again.booking) == (Code.OK, False, first.booking)
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM bookings WHERE hold_id = $1", h.hold_id) == 1
        )


async def test_passengers_must_match_the_held_seats_one_to_one(sales):
    schedule_id = await _open(sales)
    h = await hold(sales, schedule_id, ["1-1A", "1-1B"])
    for seats in (["1-1A"], ["1-1A", "1-1B", "1-1C"], ["1-1A", "1-1A"], ["1-1A", "1-1D"]):
        outcome = await sales.confirm(h.hold_id, "u1", request(seats))
        assert outcome.code == Code.INVALID_ARGUMENT, seats
        assert outcome.detail, seats
        assert (await sales.inventory.get_hold(h.hold_id)).status == "held"
    ok = await sales.confirm(h.hold_id, "u1", request(["1-1B", "1-1A"]))
    assert ok.code == Code.OK
    assert ok.created


async def test_expired_released_foreign_and_unknown_holds_are_never_confirmed(sales):
    schedule_id = await _open(sales)
    h = await hold(sales, schedule_id, ["1-1A"], ttl_ms=5_000)
    assert (
        await sales.confirm(h.hold_id, "intruder", request(["1-1A"]))
    ).code == Code.HOLD_NOT_FOUND
    await sales.inventory.advance_clock(schedule_id, 6_000)
    assert (await sales.confirm(h.hold_id, "u1", request(["1-1A"]))).code == Code.HOLD_EXPIRED
    released = await hold(sales, schedule_id, ["1-1B"])
    await sales.inventory.release(released.hold_id, "u1")
    assert (
        await sales.confirm(released.hold_id, "u1", request(["1-1B"]))
    ).code == Code.HOLD_RELEASED
    missing = f"{schedule_id}.AAAAAAAAAAAAAAAAAAAAAA"
    assert (await sales.confirm(missing, "u1", request(["1-1B"]))).code == Code.HOLD_NOT_FOUND
    assert (await sales.confirm("no-dot-here", "u1", request(["1-1B"]))).code == Code.HOLD_NOT_FOUND


async def test_postgres_unreachable_keeps_the_hold_held_and_a_retry_succeeds(sales, settings):
    schedule_id = await _open(sales)
    h = await hold(sales, schedule_id, ["1-1D"])
    dead_pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0)
    broken = Sales(settings, sales.inventory, dead_pool)
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            await broken.confirm(h.hold_id, "u1", request(["1-1D"]))
        assert caught.value.dependency == "postgres"
    finally:
        await dead_pool.close()
    assert (await sales.inventory.get_hold(h.hold_id)).status == "held"
    retry = await sales.confirm(h.hold_id, "u1", request(["1-1D"]))
    assert retry.code == Code.OK
    assert retry.created


class _RedisDiesAtConfirm(Inventory):
    async def confirm(self, hold_id: str, booking_number: str) -> Code:
        raise redis.exceptions.ConnectionError("connection reset")


async def test_redis_failing_after_the_commit_keeps_the_sale_and_reconcile_finishes_it(
    sales, settings
):
    schedule_id = await _open(sales)
    h = await hold(sales, schedule_id, ["5-1A", "5-1B"], a=1, b=3)
    flaky = _RedisDiesAtConfirm(sales.inventory.redis, sales.inventory.keys)
    await flaky.load_scripts()
    outcome = await Sales(settings, flaky, sales.pool).confirm(
        h.hold_id, "u1", request(["5-1A", "5-1B"], "300000")
    )
    assert outcome.code == Code.OK
    assert outcome.created
    assert outcome.booking is not None
    assert (await sales.inventory.get_hold(h.hold_id)).status == "confirming"
    diffs = await sales.differences(schedule_id)
    assert {(d.seat, d.kind) for d in diffs} == {
        ("5-1A", "missing_in_redis"),
        ("5-1B", "missing_in_redis"),
    }
    before = metrics.RECONCILED._value.get()
    assert await sales.repair(schedule_id, diffs) == 1
    assert metrics.RECONCILED._value.get() == before + 1
    assert await sales.differences(schedule_id) == []
    assert await try_hold(sales, schedule_id, ["5-1A"], 2, 3) == Code.SEATS_UNAVAILABLE
    retry = await sales.confirm(h.hold_id, "u1", request(["5-1A", "5-1B"], "300000"))
    assert (retry.code, retry.created, retry.booking) == (Code.OK, False, outcome.booking)


async def test_a_retry_after_the_hold_expired_returns_the_committed_booking_and_marks_it_sold(
    sales, settings
):
    schedule_id = await _open(sales)
    h = await hold(sales, schedule_id, ["1-1A"], ttl_ms=5_000)
    flaky = _RedisDiesAtConfirm(sales.inventory.redis, sales.inventory.keys)
    await flaky.load_scripts()
    first = await Sales(settings, flaky, sales.pool).confirm(h.hold_id, "u1", request(["1-1A"]))
    assert first.code == Code.OK
    await sales.inventory.advance_clock(schedule_id, 120_000)  # past expiry and confirm grace
    await sales.inventory.reap(schedule_id)
    retry = await sales.confirm(h.hold_id, "u1", request(["1-1A"]))
    assert (retry.code, retry.created, retry.booking) == (Code.OK, False, first.booking)
    assert await sales.differences(schedule_id) == []


async def test_cancel_refunds_frees_the_seat_legs_at_once_and_is_idempotent(sales, pool):
    schedule_id = await _open(sales)
    h = await hold(sales, schedule_id, ["1-1A"], a=0, b=3)
    booking = (await sales.confirm(h.hold_id, "u1", request(["1-1A"]))).booking
    assert booking is not None
    assert (await sales.cancel(booking.booking_number, "someone-else")).code == Code.HOLD_NOT_FOUND
    assert (await sales.cancel("KAINOSUCHBOOK", None)).code == Code.HOLD_NOT_FOUND
    cancelled = await sales.cancel(booking.booking_number, "u1")
    assert cancelled.code == Code.OK
    assert cancelled.booking is not None
    assert cancelled.booking.status == "cancelled"
    assert cancelled.refund is not None
    assert (cancelled.refund.amount, cancelled.refund.status) == ("450000", "completed")
    assert await try_hold(sales, schedule_id, ["1-1A"], 0, 3) == Code.OK
    again = await sales.cancel(booking.booking_number, None)
    assert (again.code, again.refund) == (Code.OK, cancelled.refund)
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM refunds r JOIN payments p ON p.id = r.payment_id"
                " JOIN bookings b ON b.id = p.booking_id WHERE b.booking_number = $1",
                booking.booking_number,
            )
            == 1
        )
        assert await conn.fetchval(
            "SELECT array_agg(DISTINCT ticket_status::text) FROM tickets t JOIN bookings b"
            " ON b.id = t.booking_id WHERE b.booking_number = $1",
            booking.booking_number,
        ) == ["cancelled"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM audit_logs WHERE entity_id = $1 AND action = 'update'",
                booking.booking_number,
            )
            == 1
        )
    # the seat sells again on the same legs: Postgres agrees (the cancelled ticket is excluded)
    h2 = await hold(sales, schedule_id, ["1-1A"], a=0, b=3, user="u2")
    assert (await sales.confirm(h2.hold_id, "u2", request(["1-1A"]))).code == Code.OK
