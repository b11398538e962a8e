"""Peak-sale waiting room over HTTP (contract: "Peak-sale waiting room"); see docs/WAITING_ROOM.md.

``PUT /v1/admin/sales/{sale_id}`` defines a sale; ``POST /v1/sales/{sale_id}/queue`` joins its
queue and ``GET /v1/sales/{sale_id}/queue/me`` reads one's place. ``require_admission`` is the
hold path's check (one call from ``api/holds.py``). ``setup_waiting_room(app)`` registers the
routes, the OpenAPI paths and a cleanup context that builds the process's ``WaitingRoom`` and
runs the admission loop (every process runs one; the rate is enforced in Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from kai_inventory import metrics
from kai_inventory.api.common import admin, ctx, holder, json_response, read_body, rfc3339_ms
from kai_inventory.api.errors import PROBLEM_CONTENT_TYPE, ApiError, invalid, invalid_many
from kai_inventory.api.openapi import add_paths, ref
from kai_inventory.context import CTX
from kai_inventory.domain import SCHEDULE_ID_PATTERN, FieldError
from kai_inventory.engine.keys import Keys
from kai_inventory.engine.waiting_room import (
    Place,
    QCode,
    SaleConfig,
    TickResult,
    WaitingRoom,
    run_admission,
)
from kai_inventory.resilience import REDIS_UNREACHABLE

WAITING_ROOM = web.AppKey("kai_waiting_room", WaitingRoom)
ADMISSION_HEADER = "X-Admission-Token"
SALE_ID_PATTERN = SCHEDULE_ID_PATTERN
MAX_SALE_SCHEDULES = 1000
ADMISSION_INTERVAL_S = 0.1

SaleId = Annotated[str, msgspec.Meta(pattern=SALE_ID_PATTERN)]
ScheduleRef = Annotated[str, msgspec.Meta(pattern=SCHEDULE_ID_PATTERN)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Seconds = Annotated[int, msgspec.Meta(ge=1, le=86_400)]


class SalePut(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``PUT /v1/admin/sales/{sale_id}``. Times are RFC 3339 with an offset."""

    schedules: Annotated[
        list[ScheduleRef], msgspec.Meta(min_length=1, max_length=MAX_SALE_SCHEDULES)
    ]
    opens_at: dt.datetime
    closes_at: dt.datetime
    admit_per_s: Positive = 200
    max_admitted: Positive = 5000
    idle_s: Seconds = 300
    admission_ttl_s: Seconds = 900


class SaleWritten(msgspec.Struct, frozen=True):
    """Answer of ``PUT /v1/admin/sales/{sale_id}``: the sale as stored, and what happened."""

    sale_id: str
    result: Literal["created", "updated", "unchanged"]
    schedules: list[str]
    opens_at: str
    closes_at: str
    admit_per_s: int
    max_admitted: int
    idle_s: int
    admission_ttl_s: int


class QueuePlace(msgspec.Struct, frozen=True, omit_defaults=True):
    """A user's place in a sale's queue. ``position`` is 1-based among the waiting (0 once
    admitted); ``ahead`` counts the users before it; admitted places carry the token."""

    ticket: str
    sale_id: str
    status: Literal["waiting", "admitted"]
    position: int
    ahead: int
    estimated_wait_s: int
    admission_token: str | None = None
    admission_expires_at: str | None = None


def room_of(request: web.Request) -> WaitingRoom:
    return request.app[WAITING_ROOM]


def _sale_id(request: web.Request) -> str:
    sale_id = request.match_info["sale_id"]
    if not 1 <= len(sale_id) <= 64 or not all(c.isalnum() or c in "_-" for c in sale_id):
        raise ApiError("sale_not_found", f"no sale {sale_id!r}", sale_id=sale_id)
    return sale_id


def _epoch_ms(field: str, moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise invalid(field, "needs a UTC offset (RFC 3339)")
    return int(moment.timestamp() * 1000)


def place_view(room: WaitingRoom, place: Place) -> QueuePlace:
    token = room.token_for(place)
    return QueuePlace(
        ticket=f"{place.sale_id}.{place.ticket}",
        sale_id=place.sale_id,
        status="admitted" if place.admitted else "waiting",
        position=place.position,
        ahead=place.ahead if not place.admitted else 0,
        estimated_wait_s=place.estimated_wait_s,
        admission_token=token,
        admission_expires_at=rfc3339_ms(place.admission_expires_ms) if token else None,
    )


def _place_or_error(place: Place) -> Place:
    if place.code == QCode.OK:
        return place
    sale_id = place.sale_id
    if place.code == QCode.SALE_NOT_FOUND:
        raise ApiError("sale_not_found", f"no sale {sale_id!r}", sale_id=sale_id)
    if place.code == QCode.SALE_NOT_OPEN:
        raise ApiError("sale_not_open", "this sale has closed", sale_id=sale_id)
    if place.code == QCode.NOT_IN_QUEUE:
        raise ApiError(
            "not_admitted",
            "you have no place in this sale's queue (never joined, or your admission was "
            "returned): join it with POST /v1/sales/{sale_id}/queue",
            sale_id=sale_id,
        )
    raise RuntimeError(f"unexpected queue result {place.code!r}")


# --- handlers ------------------------------------------------------------------------------


async def put_sale(request: web.Request) -> web.Response:
    admin(request)
    sale_id = request.match_info["sale_id"]
    if not 1 <= len(sale_id) <= 64 or not all(c.isalnum() or c in "_-" for c in sale_id):
        raise invalid("sale_id", "must be 1..64 characters of [A-Za-z0-9_-]")
    body = await read_body(request, SalePut)
    opens = _epoch_ms("opens_at", body.opens_at)
    closes = _epoch_ms("closes_at", body.closes_at)
    if closes <= opens:
        raise invalid("closes_at", "must be after opens_at")
    errors: list[FieldError] = []
    seen: set[str] = set()
    c = ctx(request)
    for i, schedule_id in enumerate(body.schedules):
        if schedule_id in seen:
            errors.append(FieldError(f"schedules[{i}]", f"{schedule_id} is given twice"))
        seen.add(schedule_id)
    if errors:
        raise invalid_many(errors)
    for i, schedule_id in enumerate(body.schedules):
        if await c.sales.ensure_schedule(schedule_id) is None:
            errors.append(FieldError(f"schedules[{i}]", f"no schedule {schedule_id}"))
    if errors:
        raise invalid_many(errors)
    sale = SaleConfig(
        sale_id=sale_id,
        schedules=list(body.schedules),
        opens_ms=opens,
        closes_ms=closes,
        admit_per_s=body.admit_per_s,
        max_admitted=body.max_admitted,
        idle_ms=body.idle_s * 1000,
        admission_ttl_ms=body.admission_ttl_s * 1000,
    )
    result = await c.sales.put_sale(sale)  # Postgres, then Redis (which decides)
    if result.code == QCode.SALE_CONFLICT:
        raise ApiError(
            "schedule_in_sale",
            f"schedule {result.conflict_schedule} is already in active sale "
            f"{result.conflict_sale} (a schedule is in at most one active sale)",
            sale_id=result.conflict_sale,
        )
    if result.code == QCode.INVALID_ARGUMENT:
        raise invalid("opens_at", "cannot move once the sale has opened")
    if result.code != QCode.OK:
        raise RuntimeError(f"unexpected sale result {result.code!r}")
    status = 201 if result.created else 200
    outcome: Literal["created", "updated", "unchanged"] = (
        "created" if result.created else ("updated" if result.changed else "unchanged")
    )
    return json_response(
        SaleWritten(
            sale_id=sale_id,
            result=outcome,
            schedules=sale.schedules,
            opens_at=rfc3339_ms(opens),
            closes_at=rfc3339_ms(closes),
            admit_per_s=sale.admit_per_s,
            max_admitted=sale.max_admitted,
            idle_s=body.idle_s,
            admission_ttl_s=body.admission_ttl_s,
        ),
        status=status,
    )


async def join_queue(request: web.Request) -> web.Response:
    """201 with the place; joining again answers the same place (also 201: the contract's
    one status for this call)."""
    principal = holder(request)
    sale_id = _sale_id(request)
    room = room_of(request)
    place = _place_or_error(await room.join(sale_id, principal.user))
    return json_response(place_view(room, place), status=201)


async def my_place(request: web.Request) -> web.Response:
    principal = holder(request)
    sale_id = _sale_id(request)
    room = room_of(request)
    place = _place_or_error(await room.status(sale_id, principal.user))
    return json_response(place_view(room, place))


async def require_admission(request: web.Request, schedule_id: str, user: str) -> None:
    """The hold path's check: while an active sale covers ``schedule_id``, the request must
    carry ``user``'s live admission for it in ``X-Admission-Token``; else 403 not_admitted.
    No sale (the common case): a dict lookup, no Redis call."""
    room = request.app.get(WAITING_ROOM)
    if room is None:
        return
    verdict = await room.check_hold(schedule_id, user, request.headers.get(ADMISSION_HEADER))
    if verdict.allowed:
        return
    metrics.HOLDS.labels("not_admitted").inc()
    details = {
        "missing": f"schedule {schedule_id} is in sale {verdict.sale_id}: send your admission "
        f"in {ADMISSION_HEADER} (join the queue at /v1/sales/{verdict.sale_id}/queue)",
        "invalid": "the admission token is malformed, wrongly signed or expired",
        "other_user": "the admission token belongs to another user",
        "other_sale": "the admission token is for another sale",
        "expired": "your admission expired or went idle; join the queue again",
        "not_admitted": "this admission is not live (returned, or replaced by a newer one)",
    }
    raise ApiError("not_admitted", details[verdict.reason], sale_id=verdict.sale_id)


# --- wiring --------------------------------------------------------------------------------


def _record(results: list[TickResult]) -> None:
    waiting = 0
    for result in results:
        waiting += result.waiting
        if result.admitted:
            metrics.QUEUE_ADMITTED.inc(result.admitted)
            for wait_ms in result.waits_ms:
                metrics.QUEUE_WAIT.observe(wait_ms / 1000)
    metrics.QUEUE_WAITING.set(waiting)


async def _waiting_room_ctx(app: web.Application) -> AsyncIterator[None]:
    c = app[CTX]
    room = WaitingRoom(
        c.redis, Keys(c.settings.key_prefix), c.settings.jwt_secret, scripts=c.inventory.scripts
    )
    with contextlib.suppress(*REDIS_UNREACHABLE):  # the admission loop refreshes it too
        await room.refresh_directory()
    app[WAITING_ROOM] = room
    # sale PUTs and recovery's restore go through this room: its cache learns them at once
    c.sales.attach_waiting_room(room)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_admission(room, stop, interval_s=ADMISSION_INTERVAL_S, on_tick=_record),
        name="admission",
    )
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        c.sales.attach_waiting_room(None)
        room.close()


def setup_waiting_room(app: web.Application) -> None:
    r = app.router
    r.add_put("/v1/admin/sales/{sale_id}", put_sale)
    r.add_post("/v1/sales/{sale_id}/queue", join_queue)
    r.add_get("/v1/sales/{sale_id}/queue/me", my_place)
    app.cleanup_ctx.append(_waiting_room_ctx)


# --- OpenAPI -------------------------------------------------------------------------------


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": ref("Problem")}},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


_SALE_PARAM = {
    "name": "sale_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": SALE_ID_PATTERN},
}
_AUTH = {
    "401": _problem("Missing or invalid token (`unauthorized`)"),
    "403": _problem("The token lacks the scope (`forbidden`)"),
    "503": _problem("Redis or Postgres unreachable (`dependency_unavailable`)"),
}
_QUEUE_ERRORS = {
    **_AUTH,
    "403": _problem(
        "The token lacks the scope (`forbidden`); for `queue/me`, no place in the queue "
        "(`not_admitted`, with `sale_id`)"
    ),
    "404": _problem("No such sale (`sale_not_found`, with `sale_id`)"),
}

add_paths(
    {
        "/v1/admin/sales/{sale_id}": {
            "put": {
                "tags": ["waiting room"],
                "summary": "Create or update a peak sale (its schedules need an admission to hold)",
                "operationId": "putSale",
                "security": [{"bearerAuth": []}],
                "parameters": [_SALE_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("SalePut")}},
                },
                "responses": {
                    "201": _json("Created", "SaleWritten"),
                    "200": _json("Updated, or the same sale again (unchanged)", "SaleWritten"),
                    "409": _problem(
                        "A schedule is already in another active sale (`schedule_in_sale`, "
                        "`sale_id` names that sale)"
                    ),
                    "422": _problem("Validation failed (`invalid_request`, with `errors`)"),
                    **_AUTH,
                },
            }
        },
        "/v1/sales/{sale_id}/queue": {
            "post": {
                "tags": ["waiting room"],
                "summary": "Join the sale's queue (one place per user: again returns the same)",
                "operationId": "joinQueue",
                "security": [{"bearerAuth": []}],
                "parameters": [_SALE_PARAM],
                "responses": {
                    "201": _json(
                        "The place (with the admission token once admitted)", "QueuePlace"
                    ),
                    "409": _problem("The sale has closed (`sale_not_open`, with `sale_id`)"),
                    **_QUEUE_ERRORS,
                },
            }
        },
        "/v1/sales/{sale_id}/queue/me": {
            "get": {
                "tags": ["waiting room"],
                "summary": "The caller's place in the sale's queue, now",
                "operationId": "myQueuePlace",
                "security": [{"bearerAuth": []}],
                "parameters": [_SALE_PARAM],
                "responses": {"200": _json("The place", "QueuePlace"), **_QUEUE_ERRORS},
            }
        },
    },
    types=[SalePut, SaleWritten, QueuePlace],
)
