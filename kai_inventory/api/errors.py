"""Problem details (RFC 9457): every error the API answers, and how exceptions become one.

Handlers raise :class:`ApiError` (or one of the helpers below); the middleware in
``api/middleware.py`` renders it as ``application/problem+json``. The ``code`` member is the
stable, machine-readable reason from the contract's error table.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from kai_inventory.domain import FieldError

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://kai-inventory.example/problems/"

# code -> (status, title). The contract's table, plus the framework-level ones.
PROBLEMS: dict[str, tuple[int, str]] = {
    "invalid_request": (422, "The request is not valid"),
    "malformed_json": (400, "The body is not valid JSON"),
    "unauthorized": (401, "Authentication required"),
    "forbidden": (403, "Not allowed"),
    "schedule_not_found": (404, "Schedule not found"),
    "hold_not_found": (404, "Hold not found"),
    "booking_not_found": (404, "Booking not found"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "seats_unavailable": (409, "Seats unavailable"),
    "insufficient_inventory": (409, "Not enough seats"),
    "hold_limit": (409, "Too many live holds"),
    "sale_closed": (409, "Sale closed"),
    "hold_released": (409, "Hold released"),
    "hold_confirmed": (409, "Hold confirmed"),
    "schedule_in_use": (409, "Schedule in use"),
    "idempotency_conflict": (409, "Idempotency key reused with another body"),
    "hold_expired": (410, "Hold expired"),
    "payload_too_large": (413, "Payload too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "rate_limited": (429, "Too many requests"),
    "internal_error": (500, "Internal server error"),
    "dependency_unavailable": (503, "A dependency is unavailable"),
    # peak-sale waiting room (api/waiting_room.py); these carry "sale_id"
    "sale_not_found": (404, "Sale not found"),
    "sale_not_open": (409, "Sale not open"),
    "schedule_in_sale": (409, "Schedule already in another active sale"),
    "not_admitted": (403, "Not admitted"),
}


class Problem(msgspec.Struct, omit_defaults=True):
    """The body of every error response. Optional members appear only where the code uses them."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    errors: list[FieldError] | None = None
    unavailable: list[str] | None = None
    available: int | None = None
    sale_id: str | None = None
    request_id: str | None = None
    checks: dict[str, str] | None = None  # /readyz: each readiness check's result


class ApiError(Exception):
    """An error answer, with the extra members its code carries (``errors``, ``unavailable``)."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        unavailable: list[str] | None = None,
        available: int | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
        sale_id: str | None = None,
        checks: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        if code not in PROBLEMS:
            raise ValueError(f"unknown problem code {code!r}")
        self.code = code
        self.status = PROBLEMS[code][0]
        self.detail = detail
        self.errors = errors
        self.unavailable = unavailable
        self.available = available
        self.sale_id = sale_id
        self.checks = checks
        self.headers = dict(headers or {})
        if retry_after_s is not None:
            self.headers["Retry-After"] = str(retry_after(retry_after_s))

    def problem(self, request_id: str | None = None) -> Problem:
        status, title = PROBLEMS[self.code]
        return Problem(
            type=TYPE_BASE + self.code.replace("_", "-"),
            title=title,
            status=status,
            code=self.code,
            detail=self.detail,
            errors=self.errors,
            unavailable=self.unavailable,
            available=self.available,
            sale_id=self.sale_id,
            request_id=request_id,
            checks=self.checks,
        )


def retry_after(seconds: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def invalid(field: str, message: str) -> ApiError:
    return ApiError("invalid_request", f"{field}: {message}", errors=[FieldError(field, message)])


def invalid_many(errors: list[FieldError]) -> ApiError:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiError("invalid_request", f"{first.field}: {first.message}{more}", errors=errors)


def field_error_from_validation(message: str) -> FieldError:
    """Turn a msgspec ``ValidationError`` message into a ``{field, message}`` pair.

    msgspec says ``"<what> - at `$.stops[0].station`"``; unknown and missing fields name the
    field in backticks inside the message, which we append to the path.
    """
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        text, where = message, "$`"
    path = where.rstrip("`")
    path = path[2:] if path.startswith("$.") else path.lstrip("$")
    named = _backticked(text)
    if named is not None and (
        text.startswith("Object contains unknown field")
        or text.startswith("Object missing required field")
    ):
        path = f"{path}.{named}" if path else named
    return FieldError(path or "body", text)


def _backticked(text: str) -> str | None:
    start = text.find("`")
    end = text.find("`", start + 1)
    if start < 0 or end < 0:
        return None
    return text[start + 1 : end]


def problem_body(problem: Problem) -> bytes:
    return _ENCODER.encode(problem)


def as_dict(problem: Problem) -> dict[str, Any]:
    return msgspec.to_builtins(problem)  # type: ignore[no-any-return]


_ENCODER = msgspec.json.Encoder()
