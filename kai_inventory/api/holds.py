"""Holds: create (by seat ids or by class and count), read, release, confirm.

Seat ids and stations are translated to engine indices with the schedule's cached ``Layout``.
The engine makes the hold, enforces the per-user limits and records the idempotency key in one
Lua script; this module maps its result codes onto the contract's answers. A hold that belongs
to someone else is answered exactly as one that does not exist.
"""

from __future__ import annotations

import hashlib
import math

import msgspec
from aiohttp import web

from kai_inventory import metrics
from kai_inventory.api.common import ctx, holder, json_response, now_ms, read_body, rfc3339_ms
from kai_inventory.api.errors import ApiError, invalid, invalid_many
from kai_inventory.api.reads import find_layout, journey_problems, layout_or_404
from kai_inventory.api.schemas import IDEMPOTENCY_KEY_MAX, BookingView, HoldCreate, HoldView
from kai_inventory.api.waiting_room import require_admission
from kai_inventory.context import AppContext
from kai_inventory.domain import Booking, ConfirmRequest, FieldError, Refund
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import Hold, HoldOutcome, HoldRequest, schedule_of_hold
from kai_inventory.engine.layout import Layout

IDEMPOTENCY_HEADER = "Idempotency-Key"

_HOLD_FAILURES: dict[Code, str] = {
    Code.SALE_CLOSED: "sale_closed",
    Code.SEATS_UNAVAILABLE: "seats_unavailable",
    Code.INSUFFICIENT_INVENTORY: "insufficient_inventory",
    Code.HOLD_LIMIT: "hold_limit",
    Code.RATE_LIMITED: "rate_limited",
    Code.IDEMPOTENCY_CONFLICT: "idempotency_conflict",
    Code.SCHEDULE_NOT_FOUND: "schedule_not_found",
}


# the outcome counter's children, bound once (``.labels()`` locks and checks on every call)
_HOLDS_HELD = metrics.HOLDS.labels("held")
_HOLDS_REPLAYED = metrics.HOLDS.labels("replayed")


def hold_not_found(hold_id: str) -> ApiError:
    return ApiError("hold_not_found", "no such hold")


def hold_confirmed() -> ApiError:
    return ApiError("hold_confirmed", "this hold is confirmed; cancel the booking instead")


def sale_closed() -> ApiError:
    return ApiError("sale_closed", "this journey is no longer on sale")


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise invalid(IDEMPOTENCY_HEADER, f"must be 1..{IDEMPOTENCY_KEY_MAX} printable characters")
    return key


def body_hash(body: HoldCreate) -> str:
    """sha256 of the canonical JSON of the decoded body (sorted keys, defaults omitted)."""
    canonical = msgspec.json.encode(msgspec.to_builtins(body), order="sorted")
    return hashlib.sha256(canonical).hexdigest()


def public_status(hold: Hold) -> str:
    """``confirming`` shows as ``held``; the engine already shows a hold past its deadline as
    ``expired`` (by Redis time), whether or not it was reaped yet."""
    return "held" if hold.status == "confirming" else hold.status


def hold_view(layout: Layout, hold: Hold, now: int, *, as_created: bool = False) -> HoldView:
    """The contract's hold body. ``as_created``: the 201 body, identical on idempotent replay."""
    if as_created:
        status = "held"
        ttl_s = max(0, round((hold.expires_ms - hold.created_ms) / 1000))
    else:
        status = public_status(hold)
        granted = math.ceil((hold.expires_ms - hold.created_ms) / 1000)
        remaining = math.ceil((hold.expires_ms - now) / 1000)
        ttl_s = max(0, min(granted, remaining)) if status == "held" else 0
    return HoldView(
        hold_id=hold.hold_id,
        schedule_id=hold.schedule_id,
        from_=layout.stops[hold.a],
        to=layout.stops[hold.b],
        seats=[layout.seat_ids[i] for i in hold.seats],
        status=status,  # type: ignore[arg-type]
        expires_at=rfc3339_ms(hold.expires_ms),
        ttl_s=ttl_s,
        booking_number=hold.booking_number if status == "confirmed" else None,
    )


def booking_view(booking: Booking, refund: Refund | None = None) -> BookingView:
    return BookingView(
        booking_number=booking.booking_number,
        hold_id=booking.hold_id,
        schedule_id=booking.schedule_id,
        from_=booking.from_,
        to=booking.to,
        status=booking.status,
        tickets=booking.tickets,
        refund=refund,
    )


def _validate_shape(body: HoldCreate, c: AppContext) -> None:
    """Contract rules that types alone cannot state (exactly one way to ask, limits)."""
    settings = c.settings
    by_seats = body.seats is not None
    by_class = body.seat_class is not None or body.count is not None
    if by_seats and by_class:
        raise invalid("seats", "give either seats or class and count, not both")
    if not by_seats and not by_class:
        raise invalid("seats", "give either seats or class and count")
    limit = settings.max_seats_per_hold
    if by_class:
        if body.seat_class is None:
            raise invalid("class", "required with count")
        if body.count is None:
            raise invalid("count", "required with class")
        if limit and body.count > limit:
            raise invalid("count", f"at most {limit} seats per hold")
    if body.seats is not None:
        if limit and len(body.seats) > limit:
            raise invalid("seats", f"at most {limit} seats per hold")
        seen: set[str] = set()
        for i, seat in enumerate(body.seats):
            if seat in seen:
                raise invalid(f"seats[{i}]", f"{seat} is given twice")
            seen.add(seat)
    if body.ttl_s is not None and body.ttl_s > settings.max_hold_ttl_s:
        raise invalid("ttl_s", f"at most {settings.max_hold_ttl_s} seconds")


def _seat_indices(layout: Layout, seats: list[str]) -> list[int]:
    indices: list[int] = []
    errors: list[FieldError] = []
    for i, seat in enumerate(seats):
        index = layout.seat_index(seat)
        if index is None:
            errors.append(FieldError(f"seats[{i}]", f"seat {seat} not on this train"))
        else:
            indices.append(index)
    if errors:
        raise invalid_many(errors)
    return indices


def _failure(outcome: HoldOutcome, layout: Layout, schedule_id: str) -> ApiError:
    code = outcome.code
    if code == Code.SEATS_UNAVAILABLE:
        seats = [layout.seat_ids[i] for i in outcome.unavailable]
        return ApiError(
            "seats_unavailable",
            f"not free for this journey: {', '.join(seats)}",
            unavailable=seats,
        )
    if code == Code.INSUFFICIENT_INVENTORY:
        return ApiError(
            "insufficient_inventory",
            f"only {outcome.available} seats of that class are free for this journey",
            available=outcome.available,
        )
    if code == Code.HOLD_LIMIT:
        return ApiError("hold_limit", "you already have the maximum number of live holds")
    if code == Code.RATE_LIMITED:
        return ApiError(
            "rate_limited",
            "too many hold attempts; retry later",
            retry_after_s=outcome.retry_after_ms / 1000,
        )
    if code == Code.SALE_CLOSED:
        return sale_closed()
    if code == Code.IDEMPOTENCY_CONFLICT:
        return ApiError(
            "idempotency_conflict", "this Idempotency-Key was used with a different body"
        )
    if code == Code.SCHEDULE_NOT_FOUND:
        return ApiError("schedule_not_found", f"no schedule {schedule_id!r}")
    if code in (Code.INVALID_ARGUMENT, Code.LAYOUT_MISMATCH):
        return invalid("body", f"the engine refused the request ({code.name.lower()})")
    raise RuntimeError(f"unexpected hold result {code!r}")


# --- handlers ------------------------------------------------------------------------------


async def create_hold(request: web.Request) -> web.Response:
    principal = holder(request)
    c = ctx(request)
    key = idempotency_key(request)
    try:
        body = await read_body(request, HoldCreate)
        _validate_shape(body, c)
        layout = await layout_or_404(c, body.schedule_id)
        legs = layout.leg_range(body.from_, body.to)
        if legs is None:
            raise invalid_many(journey_problems(layout, body.from_, body.to))
        seats = _seat_indices(layout, body.seats) if body.seats is not None else None
    except ApiError as exc:
        metrics.HOLDS.labels("invalid" if exc.status in (400, 413, 422) else exc.code).inc()
        raise
    await require_admission(request, body.schedule_id, principal.user)  # peak-sale waiting room
    settings = c.settings
    hold_request = HoldRequest(
        schedule_id=body.schedule_id,
        user=principal.user,
        a=legs[0],
        b=legs[1],
        ttl_ms=(body.ttl_s or settings.hold_ttl_s) * 1000,
        seats=seats,
        seat_class=body.seat_class,
        count=body.count or 0,
        max_active=settings.max_active_holds_per_user,
        rate_per_min=settings.hold_rate_per_min,
        idempotency_key=key,
        body_hash=body_hash(body) if key is not None else None,
    )
    outcome = await c.inventory.hold(hold_request)
    if outcome.code == Code.SCHEDULE_NOT_FOUND and await c.sales.ensure_schedule(body.schedule_id):
        # Redis had lost it; reopened from Postgres with the sales that cover it: check again
        await require_admission(request, body.schedule_id, principal.user)
        outcome = await c.inventory.hold(hold_request)
    if outcome.code != Code.OK or outcome.hold is None:
        error = _failure(outcome, layout, body.schedule_id)
        metrics.HOLDS.labels(error.code).inc()
        raise error
    (_HOLDS_REPLAYED if outcome.replayed else _HOLDS_HELD).inc()
    view = hold_view(layout, outcome.hold, now_ms(), as_created=True)
    return json_response(view, status=201, headers={"Location": f"/v1/holds/{view.hold_id}"})


async def _owned_hold(c: AppContext, hold_id: str, owner: str | None) -> tuple[Hold, Layout]:
    if schedule_of_hold(hold_id) is None:
        raise hold_not_found(hold_id)
    hold = await c.inventory.get_hold(hold_id)
    if hold is None:
        return await _confirmed_hold(c, hold_id, owner)
    if owner is not None and hold.user != owner:
        raise hold_not_found(hold_id)
    layout = await find_layout(c, hold.schedule_id)
    if layout is None:
        raise hold_not_found(hold_id)
    return hold, layout


async def _confirmed_hold(c: AppContext, hold_id: str, owner: str | None) -> tuple[Hold, Layout]:
    """A hold Redis no longer has (lost with its data) that was confirmed: rebuilt from its
    booking in Postgres, which outlives Redis; any other hold Redis lost is not found."""
    record = await c.sales.booked_hold(hold_id, owner)
    if record is None:
        raise hold_not_found(hold_id)
    booking = record.booking
    layout = await find_layout(c, booking.schedule_id)
    if layout is None:
        raise hold_not_found(hold_id)
    seats = [i for t in booking.tickets if (i := layout.seat_index(t.seat)) is not None]
    if len(seats) != len(booking.tickets):  # the train's seats changed since
        raise hold_not_found(hold_id)
    hold = Hold(
        hold_id=hold_id,
        schedule_id=booking.schedule_id,
        user=booking.user,
        a=record.from_index,
        b=record.to_index,
        seats=seats,
        status="confirmed",
        expires_ms=record.hold_expires_ms,
        created_ms=record.hold_expires_ms,
        booking_number=booking.booking_number,
    )
    return hold, layout


async def get_hold(request: web.Request) -> web.Response:
    principal = holder(request)
    hold, layout = await _owned_hold(ctx(request), request.match_info["hold_id"], principal.owner)
    return json_response(hold_view(layout, hold, now_ms()))


async def release_hold(request: web.Request) -> web.Response:
    principal = holder(request)
    c = ctx(request)
    hold_id = request.match_info["hold_id"]
    if schedule_of_hold(hold_id) is None:
        raise hold_not_found(hold_id)
    code, hold = await c.inventory.release(hold_id, principal.owner)
    if code == Code.HOLD_NOT_FOUND or hold is None:
        if await c.sales.booked_hold(hold_id, principal.owner) is not None:  # Redis lost it
            raise hold_confirmed()
        raise hold_not_found(hold_id)
    if code == Code.HOLD_CONFIRMED:
        raise hold_confirmed()
    if code != Code.OK:
        raise RuntimeError(f"unexpected release result {code!r}")
    layout = await find_layout(c, hold.schedule_id)
    if layout is None:
        raise hold_not_found(hold_id)
    return json_response(hold_view(layout, hold, now_ms()))


async def confirm_hold(request: web.Request) -> web.Response:
    principal = holder(request)
    c = ctx(request)
    hold_id = request.match_info["hold_id"]
    idempotency_key(request)  # accepted and checked; confirm is idempotent by hold anyway
    if schedule_of_hold(hold_id) is None:
        raise hold_not_found(hold_id)
    body = await read_body(request, ConfirmRequest)
    outcome = await c.sales.confirm(hold_id, principal.owner, body)
    code = outcome.code
    if code == Code.OK and outcome.booking is not None:
        return json_response(booking_view(outcome.booking), status=201 if outcome.created else 200)
    if code == Code.HOLD_NOT_FOUND:
        raise hold_not_found(hold_id)
    if code == Code.HOLD_EXPIRED:
        raise ApiError("hold_expired", "the hold expired before it was confirmed")
    if code == Code.HOLD_RELEASED:
        raise ApiError("hold_released", "the hold was released")
    if code == Code.INVALID_ARGUMENT:
        detail = outcome.detail or "passengers must match the held seats one to one"
        raise invalid("passengers", detail)
    if code == Code.SEATS_UNAVAILABLE:  # Postgres refused a seat-leg Redis had lost (23P01)
        raise ApiError("seats_unavailable", outcome.detail or "a held seat is already sold")
    if code == Code.SALE_CLOSED:
        raise sale_closed()  # cancelled, or its from stop retimed into the past, since the hold
    raise RuntimeError(f"unexpected confirm result {code!r}")
