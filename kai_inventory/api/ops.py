"""Operations: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio
import logging

import prometheus_client
from aiohttp import web

from kai_inventory import metrics
from kai_inventory.api.common import ctx, json_response
from kai_inventory.api.errors import ApiError
from kai_inventory.api.middleware import problem_response, request_id_of
from kai_inventory.api.schemas import Health, Readiness
from kai_inventory.context import AppContext
from kai_inventory.persist import migrate

log = logging.getLogger("kai_inventory.api")

READY_CHECK_TIMEOUT_S = 2.0
OPENAPI_DOCUMENT = web.AppKey("kai_openapi_document", dict[str, bytes])


async def healthz(request: web.Request) -> web.Response:
    return json_response(Health("ok"))


async def _redis(c: AppContext) -> None:
    if not await c.redis.ping():
        raise RuntimeError("no PONG")


async def _postgres(c: AppContext) -> None:
    async with c.pool.acquire() as conn:
        if await conn.fetchval("SELECT 1") != 1:
            raise RuntimeError("SELECT 1 did not answer 1")


async def _scripts(c: AppContext) -> None:
    if await c.inventory.scripts.missing():
        # Redis restarted (or flushed its functions or script cache): load them again, as
        # calls would.
        await c.inventory.load_scripts()
        if await c.inventory.scripts.missing():
            raise RuntimeError("scripts missing after reload")


async def _migrations(c: AppContext) -> None:
    waiting = await migrate.pending(c.pool)
    if waiting:
        raise RuntimeError("pending: " + ", ".join(m.filename for m in waiting))


_CHECKS = {"redis": _redis, "postgres": _postgres, "scripts": _scripts, "migrations": _migrations}


async def _run(name: str, c: AppContext) -> str:
    try:
        await asyncio.wait_for(_CHECKS[name](c), READY_CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"timed out after {READY_CHECK_TIMEOUT_S} s"
    except RuntimeError as exc:
        return str(exc)[:300]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    """200 when Redis and Postgres answer, the scripts are loaded and no migration is pending;
    else 503 ``dependency_unavailable`` (problem+json, as every error) with ``checks``."""
    c = ctx(request)
    names = list(_CHECKS)
    results = dict(zip(names, await asyncio.gather(*(_run(n, c) for n in names)), strict=True))
    for dependency in ("redis", "postgres"):
        metrics.DEPENDENCY_UP.labels(dependency).set(1 if results[dependency] == "ok" else 0)
    failed = {k: v for k, v in results.items() if v != "ok"}
    if not failed:
        return json_response(Readiness("ok", results))
    log.warning("not ready: %s", failed)
    error = ApiError(
        "dependency_unavailable",
        f"not ready: {', '.join(failed)}",
        retry_after_s=2,
        checks=results,
    )
    return problem_response(error, request_id_of(request))


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text; the live-hold gauge and the expired-hold counter (counted by the Redis
    servers' scripts) are read from Redis at scrape time (best effort: the scrape answers even
    when Redis does not, and a value that could not be read keeps the last one)."""
    inventory = ctx(request).inventory
    live, expired = await asyncio.gather(
        asyncio.wait_for(inventory.live_holds(), READY_CHECK_TIMEOUT_S),
        asyncio.wait_for(inventory.expired_total(), READY_CHECK_TIMEOUT_S),
        return_exceptions=True,
    )
    if isinstance(live, BaseException):
        log.warning("holds_live not updated: %s", type(live).__name__)
    else:
        metrics.HOLDS_LIVE.set(live)
    if isinstance(expired, BaseException):
        log.warning("holds_expired_total not updated: %s", type(expired).__name__)
    else:
        metrics.HOLDS_EXPIRED.set(expired)
    return web.Response(
        body=prometheus_client.generate_latest(metrics.REGISTRY),
        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
    )


async def openapi_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOCUMENT]["body"], content_type="application/json")
