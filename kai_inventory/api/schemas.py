"""msgspec Structs for every HTTP request and response body of API v1.

Request Structs forbid unknown fields; their types carry the contract's patterns and bounds,
and the settings-dependent limits (seats per hold, hold TTL) are checked in the handlers and
written into the OpenAPI document. The catalogue and booking bodies are the shared ones in
``kai_inventory.domain``; search results and schedule views come from ``kai_inventory.sales``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from kai_inventory.domain import (
    MAX_SEATS,
    SCHEDULE_ID_PATTERN,
    STATION_PATTERN,
    Refund,
    ScheduleStatus,
    SeatClass,
    SeatId,
    Ticket,
)
from kai_inventory.engine.views import ClassAvailability
from kai_inventory.sales import SearchResult

ScheduleId = Annotated[str, msgspec.Meta(pattern=SCHEDULE_ID_PATTERN)]
Station = Annotated[str, msgspec.Meta(pattern=STATION_PATTERN)]
HoldStatus = Literal["held", "confirmed", "released", "expired"]
SeatState = Literal["free", "held", "sold"]

MAX_TTL_S = 86_400
MAX_QUERIES = 200
IDEMPOTENCY_KEY_MAX = 128


# --- requests ------------------------------------------------------------------------------


class HoldCreate(
    msgspec.Struct,
    forbid_unknown_fields=True,
    frozen=True,
    omit_defaults=True,
    rename={"from_": "from", "seat_class": "class"},
):
    """``POST /v1/holds``: either ``seats`` or ``class`` + ``count``, never both."""

    schedule_id: ScheduleId
    from_: Station
    to: Station
    seats: Annotated[list[SeatId], msgspec.Meta(min_length=1, max_length=MAX_SEATS)] | None = None
    seat_class: SeatClass | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEATS)] | None = None
    ttl_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_S)] | None = None


class StatusChange(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``POST /v1/admin/schedules/{id}/status``."""

    status: ScheduleStatus
    delay_minutes: Annotated[int, msgspec.Meta(ge=0, le=10_080)] = 0
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class JourneyQuery(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename={"from_": "from"}
):
    schedule_id: ScheduleId
    from_: Station
    to: Station


class AvailabilityQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``POST /v1/availability/query``: 1..200 journeys."""

    queries: Annotated[list[JourneyQuery], msgspec.Meta(min_length=1, max_length=MAX_QUERIES)]


class SearchParams(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename={"from_": "from"}
):
    """Query of ``GET /v1/schedules``."""

    from_: Station
    to: Station
    date: dt.date


class JourneyParams(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename={"from_": "from"}
):
    """Query of the availability and seat-map reads (default: first to last stop)."""

    from_: Station | None = None
    to: Station | None = None


# --- responses -----------------------------------------------------------------------------


class HoldView(msgspec.Struct, frozen=True, omit_defaults=True, rename={"from_": "from"}):
    hold_id: str
    schedule_id: str
    from_: str
    to: str
    seats: list[str]
    status: HoldStatus
    expires_at: str
    ttl_s: int
    booking_number: str | None = None


class AvailabilityView(msgspec.Struct, frozen=True, rename={"from_": "from"}):
    schedule_id: str
    from_: str
    to: str
    version: int
    classes: list[ClassAvailability]


class ItemError(msgspec.Struct, frozen=True):
    code: Literal["schedule_not_found", "invalid_request"]
    detail: str


class QueryItemError(msgspec.Struct, frozen=True, rename={"from_": "from"}):
    schedule_id: str
    from_: str
    to: str
    error: ItemError


class QueryResults(msgspec.Struct, frozen=True):
    """Each item is an ``AvailabilityView`` or a ``QueryItemError`` (a oneOf in the OpenAPI)."""

    results: list[Any]


class SeatView(msgspec.Struct, frozen=True):
    seat: str
    state: SeatState


class CoachView(msgspec.Struct, frozen=True, rename={"cls": "class"}):
    car: int
    cls: SeatClass
    seats: list[SeatView]


class SeatMapView(msgspec.Struct, frozen=True, rename={"from_": "from"}):
    schedule_id: str
    from_: str
    to: str
    version: int
    coaches: list[CoachView]


class SearchResponse(msgspec.Struct, frozen=True):
    schedules: list[SearchResult]


class StatusView(msgspec.Struct, frozen=True):
    schedule_id: str
    status: ScheduleStatus
    delay_minutes: int
    reason: str | None


class BookingView(msgspec.Struct, frozen=True, omit_defaults=True, rename={"from_": "from"}):
    booking_number: str
    hold_id: str
    schedule_id: str
    from_: str
    to: str
    status: Literal["confirmed", "cancelled"]
    tickets: list[Ticket]
    refund: Refund | None = None


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok"]


class Readiness(msgspec.Struct, frozen=True):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
