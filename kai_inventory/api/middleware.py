"""The one middleware around every request: request id, errors as problem+json, metrics, log.

- ``X-Request-ID`` is taken from the request when it is sane, else generated; it is echoed on
  every response. A handler that prepares its own response (the WebSocket handshake) sets it
  first with ``request_id_of``; the rest get it here. Not an ``on_response_prepare`` hook,
  a signal dispatch per response: without it ``/healthz`` went from 19.6-20.4k to 20.9-22.3k
  req/s (docs/PERFORMANCE.md, "Tenth pass").
- ``ApiError`` becomes its problem; aiohttp's own 404/405/413 become ``not_found``,
  ``method_not_allowed`` and ``payload_too_large``; an unreachable Redis or Postgres becomes 503
  ``dependency_unavailable`` with ``Retry-After``; anything else is logged and answered 500
  with the request id.
- ``kai_inventory_http_request_duration_seconds`` is observed by route template (never the
  raw path), method and status; one JSON access-log line per request (path without the query
  string, so no ``?token=`` ever reaches the log).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import redis.exceptions
from aiohttp import web

from kai_inventory import metrics
from kai_inventory.api.common import check_declared_size
from kai_inventory.api.errors import PROBLEM_CONTENT_TYPE, ApiError, problem_body
from kai_inventory.logs import REQUEST_ID
from kai_inventory.sales import DependencyUnavailable

log = logging.getLogger("kai_inventory.api")
access_log = logging.getLogger("kai_inventory.access")

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("kai_request_id", str)
DEPENDENCY_RETRY_AFTER_S = 2
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def request_id_of(request: web.Request) -> str:
    known: str | None = request.get(REQUEST_ID_KEY)
    if known is not None:
        return known
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    value = incoming if incoming and _SANE_ID.match(incoming) else os.urandom(16).hex()
    request[REQUEST_ID_KEY] = value
    return value


# Histogram children by (route template, method, status): ``.labels()`` takes a lock and
# converts and checks its labels on every call; the set is small (routes x methods x statuses).
_DURATION_CHILDREN: dict[tuple[str, str, int], Any] = {}
_MAX_CHILDREN = 4096


def _duration_child(route: str, method: str, status: int) -> Any:
    key = (route, method, status)
    child = _DURATION_CHILDREN.get(key)
    if child is None:
        child = metrics.HTTP_REQUEST_DURATION.labels(route, method, str(status))
        if len(_DURATION_CHILDREN) < _MAX_CHILDREN:
            _DURATION_CHILDREN[key] = child
    return child


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def problem_response(error: ApiError, request_id: str) -> web.Response:
    return web.Response(
        body=problem_body(error.problem(request_id)),
        status=error.status,
        content_type=PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )


def dependency_of(exc: BaseException) -> str | None:
    """``redis`` / ``postgres`` when ``exc`` says a dependency is unreachable, else None."""
    if isinstance(exc, DependencyUnavailable):
        return str(getattr(exc, "dependency", "") or "unknown")
    if isinstance(exc, _REDIS_ERRORS):
        return "redis"
    if isinstance(exc, _POSTGRES_ERRORS):
        return "postgres"
    if isinstance(exc, OSError | TimeoutError):
        return "unknown"
    return None


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return ApiError("not_found", "no such resource")
    if exc.status == 405:
        allowed: set[str] = set(getattr(exc, "allowed_methods", ()))
        return ApiError(
            "method_not_allowed",
            f"allowed: {', '.join(sorted(allowed))}",
            headers={"Allow": ",".join(sorted(allowed))},
        )
    if exc.status == 413:
        return ApiError("payload_too_large", "the request body is over 65536 bytes")
    if exc.status in (400, 411):
        return ApiError("malformed_json", exc.reason or "bad request")
    if exc.status == 415:
        return ApiError("unsupported_media_type", exc.reason or "unsupported media type")
    if exc.status == 503:
        return ApiError(
            "dependency_unavailable", exc.reason, retry_after_s=DEPENDENCY_RETRY_AFTER_S
        )
    return ApiError("internal_error", exc.reason or "error")


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_of(request)
    context_token = REQUEST_ID.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        try:
            check_declared_size(request)
            response = await handler(request)
        except ApiError as exc:
            response = problem_response(exc, request_id)
        except web.HTTPException as exc:
            if exc.status < 400:
                status = exc.status
                exc.headers[REQUEST_ID_HEADER] = request_id
                raise
            response = problem_response(_from_http_exception(exc), request_id)
        except asyncio.CancelledError:
            status = 499  # the client went away, or the server is shutting down
            raise
        except Exception as exc:
            dependency = dependency_of(exc)
            if dependency is None:
                log.exception("unhandled error in %s %s", request.method, route_of(request))
                error = ApiError("internal_error", f"unexpected error; request id {request_id}")
            else:
                metrics.DEPENDENCY_ERRORS.labels(dependency).inc()
                log.warning("dependency unavailable: %s (%s)", dependency, type(exc).__name__)
                error = ApiError(
                    "dependency_unavailable",
                    f"{dependency} is unavailable; retry shortly",
                    retry_after_s=DEPENDENCY_RETRY_AFTER_S,
                )
            response = problem_response(error, request_id)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        status = response.status
        if status == 429:
            metrics.RATE_LIMITED.inc()
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = route_of(request)
        method = request.method
        _duration_child(route, method, status).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):  # the record's fields only when it is kept
            access_log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "remote": request.remote,
                },
            )
        REQUEST_ID.reset(context_token)
