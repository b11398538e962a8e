"""What every handler uses: the app context, body and query decoding, JSON answers, auth."""

from __future__ import annotations

import functools
import time
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from kai_inventory.api.auth import (
    SCOPE_ADMIN,
    SCOPE_HOLD,
    SCOPE_READ,
    Principal,
    TokenVerifier,
    authenticate,
)
from kai_inventory.api.errors import ApiError, field_error_from_validation, invalid_many
from kai_inventory.context import CTX, AppContext
from kai_inventory.domain import FieldError

T = TypeVar("T")

MAX_BODY_BYTES = 64 * 1024
JSON_CONTENT_TYPE = "application/json"
VERIFIER = web.AppKey("kai_token_verifier", TokenVerifier)

_ENCODER = msgspec.json.Encoder()


def ctx(request: web.Request) -> AppContext:
    return request.app[CTX]


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_ENCODER.encode(body), status=status, content_type=JSON_CONTENT_TYPE, headers=headers
    )


def encode_json(body: Any) -> bytes:
    return _ENCODER.encode(body)


def raw_json_response(body: bytes) -> web.Response:
    """A 200 with an already encoded JSON body (a cached one)."""
    return web.Response(body=body, content_type=JSON_CONTENT_TYPE)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@functools.lru_cache(maxsize=4096)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def rfc3339_ms(epoch_ms: int) -> str:
    """``2026-12-20T01:50:00.000Z``: UTC, millisecond precision (integer arithmetic: exact;
    the second's text is cached, as every hold of a second shares it)."""
    second, ms = divmod(epoch_ms, 1000)
    return f"{_utc_second(second)}.{ms:03d}Z"


# --- bodies --------------------------------------------------------------------------------


def check_declared_size(request: web.Request) -> None:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise too_large()


def too_large() -> ApiError:
    return ApiError("payload_too_large", f"the request body is over {MAX_BODY_BYTES} bytes")


async def read_body(request: web.Request, type_: type[T]) -> T:
    """The JSON body as ``type_``: 413 when too big, 400 when not JSON, 422 when invalid."""
    check_declared_size(request)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large() from None
    if len(raw) > MAX_BODY_BYTES:
        raise too_large()
    return decode_body(raw, type_)


def decode_body(raw: bytes, type_: type[T]) -> T:
    if not raw.strip():
        raise ApiError("malformed_json", "the request needs a JSON body")
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        # msgspec validates while it parses: tell a type error from broken JSON.
        try:
            msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise ApiError("malformed_json", "the body is not valid JSON") from None
        except RecursionError:  # untyped decoding recurses per nesting level
            raise too_deep() from None
        raise invalid_many([field_error_from_validation(str(exc))]) from None
    except msgspec.DecodeError as exc:
        raise ApiError("malformed_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise too_deep() from None


def too_deep() -> ApiError:
    return ApiError("malformed_json", "the body nests arrays or objects too deeply")


# Decoded query strings of frozen (immutable, so shareable) types, by (type, raw query string):
# a popular journey's reads repeat the same query string. Failures are never kept.
_QUERIES: dict[tuple[type, str], Any] = {}
_QUERIES_MAX = 4096


def parse_query(request: web.Request, type_: type[T]) -> T:
    """Decode the query string into ``type_`` (unknown or repeated parameters are 422)."""
    key = (type_, request.rel_url.raw_query_string)
    found = _QUERIES.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    parsed = _parse_query(request, type_)
    if getattr(getattr(type_, "__struct_config__", None), "frozen", False):
        if len(_QUERIES) >= _QUERIES_MAX:
            _QUERIES.clear()
        _QUERIES[key] = parsed
    return parsed


def _parse_query(request: web.Request, type_: type[T]) -> T:
    values: dict[str, str] = {}
    for key, value in request.query.items():
        if key in values:
            raise invalid_many([_field(key, "given more than once")])
        values[key] = value
    try:
        return msgspec.convert(values, type_, strict=False)
    except msgspec.ValidationError as exc:
        error = field_error_from_validation(str(exc))
        if error.message.startswith("Object contains unknown field"):
            error = _field(error.field, "unknown query parameter")
        elif error.message.startswith("Object missing required field"):
            error = _field(error.field, "required query parameter")
        raise invalid_many([error]) from None


def _field(field: str, message: str) -> FieldError:
    return FieldError(field, message)


# --- auth ----------------------------------------------------------------------------------


def reader(request: web.Request) -> Principal:
    """Reads: anonymous while ``KAI_ANONYMOUS_READS=1``, else a token with a read scope."""
    return authenticate(
        request,
        request.app[VERIFIER],
        any_of=(SCOPE_READ, SCOPE_HOLD),
        anonymous_ok=ctx(request).settings.anonymous_reads,
    )


def holder(request: web.Request) -> Principal:
    return authenticate(request, request.app[VERIFIER], any_of=(SCOPE_HOLD,))


def admin(request: web.Request) -> Principal:
    return authenticate(request, request.app[VERIFIER], any_of=(SCOPE_ADMIN,))
