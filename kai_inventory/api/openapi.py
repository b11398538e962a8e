"""The OpenAPI 3.1 document of API v1, generated from the same Structs the handlers decode and
encode (``msgspec.json.schema_components``) plus the path definitions below.

Limits that depend on settings (seats per hold, hold TTL) are written into the schemas of the
running service. Paths of optional parts (the WebSocket page, the demo token) are included when
their routes are registered; other modules may describe their own paths with ``add_paths``.
A test checks that the registered routes and the document's paths are the same set.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from kai_inventory.api.admin import ScheduleWritten
from kai_inventory.api.errors import PROBLEM_CONTENT_TYPE, Problem
from kai_inventory.api.schemas import (
    IDEMPOTENCY_KEY_MAX,
    AvailabilityQuery,
    AvailabilityView,
    BookingView,
    Health,
    HoldCreate,
    HoldView,
    JourneyParams,
    QueryItemError,
    QueryResults,
    Readiness,
    SearchParams,
    SearchResponse,
    SeatMapView,
    StatusChange,
    StatusView,
)
from kai_inventory.domain import MAX_SEATS, SCHEDULE_ID_PATTERN, ConfirmRequest, ScheduleDef
from kai_inventory.sales import ScheduleView
from kai_inventory.settings import Settings

REF = "#/components/schemas/{name}"
JSON = "application/json"

_TYPES: list[Any] = [
    HoldCreate,
    HoldView,
    StatusChange,
    StatusView,
    AvailabilityQuery,
    AvailabilityView,
    QueryItemError,
    QueryResults,
    SeatMapView,
    SearchResponse,
    ScheduleView,
    ScheduleDef,
    ScheduleWritten,
    ConfirmRequest,
    BookingView,
    Problem,
    Health,
    Readiness,
    SearchParams,
    JourneyParams,
]
_EXTRA_PATHS: dict[str, dict[str, Any]] = {}
_EXTRA_TYPES: list[Any] = []


def add_paths(paths: dict[str, dict[str, Any]], types: Sequence[Any] = ()) -> None:
    """Describe more paths (another module's routes); ``types`` are added to the components."""
    _EXTRA_PATHS.update(paths)
    _EXTRA_TYPES.extend(types)


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


# --- building blocks -----------------------------------------------------------------------

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    400: "Malformed JSON (`malformed_json`)",
    401: "Missing or invalid token (`unauthorized`)",
    403: "The token lacks the scope (`forbidden`)",
    404: "Not found (`schedule_not_found`, `hold_not_found`, `booking_not_found`)",
    409: "Conflict (see `code`)",
    410: "The hold expired (`hold_expired`)",
    413: "Body over 64 KiB (`payload_too_large`)",
    422: "Validation failed (`invalid_request`, with `errors`)",
    429: "Too many hold attempts (`rate_limited`), see `Retry-After`",
    503: "Redis or Postgres unreachable (`dependency_unavailable`), see `Retry-After`",
}


def _ok(status: int, schema: str | None, description: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description or _STATUS_TEXT[status]}
    if schema is not None:
        response["content"] = {JSON: {"schema": ref(schema)}}
    return response


def _problems(*statuses: int) -> dict[str, Any]:
    problem = {PROBLEM_CONTENT_TYPE: {"schema": ref("Problem")}}
    responses: dict[str, Any] = {
        str(s): {"description": _STATUS_TEXT[s], "content": problem} for s in statuses
    }
    if 429 in statuses or 503 in statuses:
        for s in (429, 503):
            if s in statuses:
                responses[str(s)]["headers"] = {
                    "Retry-After": {"schema": {"type": "integer", "minimum": 1}}
                }
    responses["default"] = {"description": "Any other error", "content": problem}
    return responses


_READ: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]
_TOKEN: list[dict[str, list[str]]] = [{"bearerAuth": []}]

_SCHEDULE_ID = {
    "name": "schedule_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": SCHEDULE_ID_PATTERN},
}
_HOLD_ID = {
    "name": "hold_id",
    "in": "path",
    "required": True,
    "description": "`<schedule_id>.<128 random bits>` as returned by `POST /v1/holds`",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
_BOOKING_NUMBER = {
    "name": "booking_number",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key and body from the same user within 24 h return the first answer.",
    "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
}

_ADMISSION_TOKEN = {
    "name": "X-Admission-Token",
    "in": "header",
    "required": False,
    "description": (
        "While a sale is active on the schedule (the waiting room): the caller's admission "
        "token from its queue place; without it, or with another user's or an expired one, "
        "403 not_admitted."
    ),
    "schema": {"type": "string"},
}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": ref(schema)}}}


def _query_params(components: dict[str, Any], struct: str) -> list[dict[str, Any]]:
    schema = components[struct]
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema["properties"].items():
        prop = _non_null(prop)
        params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return params


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``T | None`` -> ``T`` (msgspec writes an anyOf with a null branch)."""
    branches = schema.get("anyOf")
    if branches:
        rest = [b for b in branches if b.get("type") != "null"]
        if len(rest) == 1:
            return dict(rest[0])
    return schema


def _paths(components: dict[str, Any]) -> dict[str, dict[str, Any]]:
    journey = _query_params(components, "JourneyParams")
    return {
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "summary": "The process is alive",
                "operationId": "healthz",
                "responses": {"200": _ok(200, "Health")},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "summary": "Redis and Postgres answer, scripts loaded, migrations current",
                "operationId": "readyz",
                "responses": {
                    "200": _ok(200, "Readiness"),
                    **_problems(503),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "tags": ["operations"],
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/v1/schedules": {
            "get": {
                "tags": ["reads"],
                "summary": "Schedules on a date that call at `from` and later at `to`",
                "operationId": "searchSchedules",
                "security": _READ,
                "parameters": _query_params(components, "SearchParams"),
                "responses": {
                    "200": _ok(200, "SearchResponse"),
                    **_problems(401, 403, 422, 503),
                },
            }
        },
        "/v1/schedules/{schedule_id}": {
            "get": {
                "tags": ["reads"],
                "summary": "The schedule as defined, with its status",
                "operationId": "getSchedule",
                "security": _READ,
                "parameters": [_SCHEDULE_ID],
                "responses": {
                    "200": _ok(200, "ScheduleView"),
                    **_problems(401, 403, 404, 503),
                },
            }
        },
        "/v1/schedules/{schedule_id}/availability": {
            "get": {
                "tags": ["reads"],
                "summary": "Free seats per class for a journey (default: first to last stop)",
                "operationId": "getAvailability",
                "security": _READ,
                "parameters": [_SCHEDULE_ID, *journey],
                "responses": {
                    "200": _ok(200, "AvailabilityView"),
                    **_problems(401, 403, 404, 422, 503),
                },
            }
        },
        "/v1/schedules/{schedule_id}/seatmap": {
            "get": {
                "tags": ["reads"],
                "summary": "Every seat's state for a journey, by coach",
                "operationId": "getSeatMap",
                "security": _READ,
                "parameters": [_SCHEDULE_ID, *journey],
                "responses": {
                    "200": _ok(200, "SeatMapView"),
                    **_problems(401, 403, 404, 422, 503),
                },
            }
        },
        "/v1/availability/query": {
            "post": {
                "tags": ["reads"],
                "summary": "Availability of 1..200 journeys in one call (answers in request order)",
                "operationId": "queryAvailability",
                "security": _READ,
                "requestBody": _body("AvailabilityQuery"),
                "responses": {
                    "200": _ok(200, "QueryResults"),
                    **_problems(400, 401, 403, 413, 422, 503),
                },
            }
        },
        "/v1/admin/schedules/{schedule_id}": {
            "put": {
                "tags": ["catalogue"],
                "summary": "Create or replace a schedule and open it for sale",
                "operationId": "putSchedule",
                "security": _TOKEN,
                "parameters": [_SCHEDULE_ID],
                "requestBody": _body("ScheduleDef"),
                "responses": {
                    "201": _ok(201, "ScheduleWritten", "Created"),
                    "200": _ok(200, "ScheduleWritten", "Replaced, or unchanged"),
                    **_problems(400, 401, 403, 409, 413, 422, 503),
                },
            }
        },
        "/v1/admin/schedules/{schedule_id}/status": {
            "post": {
                "tags": ["catalogue"],
                "summary": "Set the schedule's status (cancelled closes the sale)",
                "operationId": "setScheduleStatus",
                "security": _TOKEN,
                "parameters": [_SCHEDULE_ID],
                "requestBody": _body("StatusChange"),
                "responses": {
                    "200": _ok(200, "StatusView"),
                    **_problems(400, 401, 403, 404, 413, 422, 503),
                },
            }
        },
        "/v1/holds": {
            "post": {
                "tags": ["holds"],
                "summary": "Hold seats for a journey: by seat ids, or by class and count",
                "operationId": "createHold",
                "security": _TOKEN,
                "parameters": [_IDEMPOTENCY_KEY, _ADMISSION_TOKEN],
                "requestBody": _body("HoldCreate"),
                "responses": {
                    "201": _ok(201, "HoldView"),
                    **_problems(400, 401, 403, 404, 409, 413, 422, 429, 503),
                },
            }
        },
        "/v1/holds/{hold_id}": {
            "get": {
                "tags": ["holds"],
                "summary": "The hold, with its status",
                "operationId": "getHold",
                "security": _TOKEN,
                "parameters": [_HOLD_ID],
                "responses": {
                    "200": _ok(200, "HoldView"),
                    **_problems(401, 403, 404, 503),
                },
            },
            "delete": {
                "tags": ["holds"],
                "summary": "Release the hold (again: 200; a confirmed one: 409 hold_confirmed)",
                "operationId": "releaseHold",
                "security": _TOKEN,
                "parameters": [_HOLD_ID],
                "responses": {
                    "200": _ok(200, "HoldView"),
                    **_problems(401, 403, 404, 409, 503),
                },
            },
        },
        "/v1/holds/{hold_id}/confirm": {
            "post": {
                "tags": ["holds"],
                "summary": "Confirm the hold: one passenger per held seat, and the payment",
                "operationId": "confirmHold",
                "security": _TOKEN,
                "parameters": [_HOLD_ID, _IDEMPOTENCY_KEY],
                "requestBody": _body("ConfirmRequest"),
                "responses": {
                    "201": _ok(201, "BookingView", "Confirmed"),
                    "200": _ok(200, "BookingView", "Already confirmed: the same booking"),
                    **_problems(400, 401, 403, 404, 409, 410, 413, 422, 503),
                },
            }
        },
        "/v1/bookings/{booking_number}": {
            "get": {
                "tags": ["bookings"],
                "summary": "The booking (owner or admin)",
                "operationId": "getBooking",
                "security": _TOKEN,
                "parameters": [_BOOKING_NUMBER],
                "responses": {
                    "200": _ok(200, "BookingView"),
                    **_problems(401, 403, 404, 503),
                },
            }
        },
        "/v1/bookings/{booking_number}/cancel": {
            "post": {
                "tags": ["bookings"],
                "summary": "Cancel the booking; its seats return to sale at once",
                "operationId": "cancelBooking",
                "security": _TOKEN,
                "parameters": [_BOOKING_NUMBER],
                "responses": {
                    "200": _ok(200, "BookingView", "Cancelled, with the refund"),
                    **_problems(401, 403, 404, 409, 503),
                },
            }
        },
    }


# Paths of optional parts, included when their routes are registered.
_OPTIONAL_PATHS: dict[str, dict[str, Any]] = {
    "/": {
        "get": {
            "tags": ["live"],
            "summary": "The live seat-map page (HTML)",
            "operationId": "seatMapPage",
            "responses": {
                "200": {
                    "description": "HTML",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/v1/ws": {
        "get": {
            "tags": ["live"],
            "summary": "WebSocket: live availability (see the contract's WebSocket section)",
            "operationId": "webSocket",
            "parameters": [
                {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}}
            ],
            "responses": {
                "101": {"description": "Switching protocols"},
                "default": {"description": "Not a WebSocket handshake"},
            },
        }
    },
    "/v1/demo/token": {
        "get": {
            "tags": ["live"],
            "summary": "Demo mode only: a short-lived token for the seat-map page (404 otherwise)",
            "operationId": "demoToken",
            "responses": {
                "200": {
                    "description": "A token",
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                "default": {"description": "Not in demo mode"},
            },
        }
    },
}


def _apply_limits(components: dict[str, Any], settings: Settings) -> None:
    props = components["HoldCreate"]["properties"]
    seats_limit = settings.max_seats_per_hold or MAX_SEATS
    for branch in props["seats"].get("anyOf", [props["seats"]]):
        if branch.get("type") == "array":
            branch["maxItems"] = seats_limit
    for name, maximum in (("count", seats_limit), ("ttl_s", settings.max_hold_ttl_s)):
        for branch in props[name].get("anyOf", [props[name]]):
            if branch.get("type") == "integer":
                branch["maximum"] = maximum


def _complete_responses(paths: dict[str, dict[str, Any]]) -> None:
    """Every operation answers errors as problem+json: a body may be malformed (400) or too
    large (413), and any other error is covered by ``default``."""
    problem = {PROBLEM_CONTENT_TYPE: {"schema": ref("Problem")}}
    for operations in paths.values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                for status in (400, 413):
                    responses.setdefault(
                        str(status), {"description": _STATUS_TEXT[status], "content": problem}
                    )
            responses.setdefault("default", {"description": "Any other error", "content": problem})


def build_openapi(settings: Settings, registered: Iterable[str] | None = None) -> dict[str, Any]:
    """The document; ``registered`` (route paths) selects which optional paths to include."""
    _, components = msgspec.json.schema_components([*_TYPES, *_EXTRA_TYPES], ref_template=REF)
    components = copy.deepcopy(components)
    components["QueryResults"]["properties"]["results"] = {
        "type": "array",
        "items": {"oneOf": [ref("AvailabilityView"), ref("QueryItemError")]},
    }
    _apply_limits(components, settings)
    paths = _paths(components)
    wanted = set(registered) if registered is not None else set(_OPTIONAL_PATHS)
    paths.update({p: spec for p, spec in _OPTIONAL_PATHS.items() if p in wanted})
    paths.update(_EXTRA_PATHS)
    _complete_responses(paths)
    for name in ("SearchParams", "JourneyParams"):
        components.pop(name, None)  # described as query parameters, not bodies
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kai-inventory",
            "version": "1.0.0",
            "description": "Segment-aware train seat inventory. See docs/API.md for the guide.",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": n} for n in ("reads", "holds", "bookings", "catalogue", "operations", "live")
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
