"""The aiohttp application: wires settings, Redis, Postgres, the engine, sales, API and ws.

``create_app(settings)`` only builds; connections are opened at start-up in a cleanup context
(and closed in reverse order at shutdown), so the same factory serves ``kai-inventory serve``,
each worker process, and the tests' ``aiohttp_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.exceptions
from aiohttp import web

from kai_inventory.api import MAX_BODY_BYTES, setup_api
from kai_inventory.context import CTX, AppContext
from kai_inventory.engine.inventory import Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.engine.reaper import run_reaper
from kai_inventory.persist.db import create_pool
from kai_inventory.resilience import (
    REDIS_UNREACHABLE,
    StartupCheckError,
    check_redis_config,
    create_service_redis,
)
from kai_inventory.sales import Sales
from kai_inventory.settings import Settings
from kai_inventory.ws import setup_ws

log = logging.getLogger("kai_inventory.app")

BACKGROUND_STOP_TIMEOUT_S = 5.0
REDIS_RECHECK_S = 2.0
REDIS_REFUSED_US = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.cleanup_ctx.append(_resources(settings))
    app.cleanup_ctx.append(_background)
    setup_api(app, settings)
    setup_ws(app, demo=settings.demo)
    return app


def _resources(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        redis = create_service_redis(settings)
        pool = None
        inventory: Inventory | None = None
        recheck: asyncio.Task[None] | None = None
        try:
            inventory = Inventory(redis, Keys(settings.key_prefix))
            try:
                await check_redis_config(redis)  # refuses an evicting Redis, warns when AOF is off
                await inventory.load_scripts()
            except REDIS_REFUSED_US:  # wrong credentials: a configuration error, not an outage
                raise
            except REDIS_UNREACHABLE as exc:
                # a worker that starts while Redis is down serves (503 for what needs Redis)
                # rather than exiting, which stops its siblings too; the scripts load on their
                # first call (the registry reloads a missing library)
                log.warning("Redis unreachable at start-up (%s); serving without it", exc)
                recheck = asyncio.create_task(_check_redis_when_back(redis), name="redis-check")
            pool = await create_pool(settings)
            sales = Sales(settings, inventory, pool)
            app[CTX] = AppContext(settings, redis, inventory, pool, sales)
            yield
        finally:
            if recheck is not None:
                recheck.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recheck
            if pool is not None:
                await pool.close()
            if inventory is not None:
                inventory.close()
            await redis.aclose()

    return resources


async def _check_redis_when_back(redis: Any) -> None:
    """The start-up check of a Redis that did not answer at start-up, tried until it answers.
    An evicting Redis found now is logged as an error: the service is serving already."""
    while True:
        await asyncio.sleep(REDIS_RECHECK_S)
        try:
            await check_redis_config(redis)
        except REDIS_UNREACHABLE:
            continue
        except StartupCheckError as exc:
            log.error("%s (found after start-up)", exc)
        return


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The hold reaper and sales' reconcile/epoch loop, stopped at shutdown."""
    c = app[CTX]
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_reaper(c.inventory, stop), name="reaper"),
        asyncio.create_task(c.sales.run_background(stop), name="sales-background"),
    ]
    try:
        yield
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=BACKGROUND_STOP_TIMEOUT_S)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("background task %s failed", task.get_name(), exc_info=task.exception())
