"""Live availability over WebSocket, and the live seat-map page.

``setup_ws(app)`` adds ``GET /v1/ws``, ``GET /`` (the page), ``/static/`` (its assets) and,
in demo mode, ``GET /v1/demo/token``; a cleanup context starts and stops the fan-out, reading
the ``AppContext`` from ``app[CTX]`` at start-up.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from kai_inventory.api.auth import TokenVerifier
from kai_inventory.context import CTX
from kai_inventory.engine.keys import Keys
from kai_inventory.ws.broker import Broker, RedisBroker
from kai_inventory.ws.cluster_broker import ClusterBroker
from kai_inventory.ws.endpoint import (
    OPEN_WEBSOCKETS,
    STATIC_DIR,
    WS_STATE,
    WsState,
    close_all,
    demo_token_handler,
    index_handler,
    ws_handler,
)
from kai_inventory.ws.fanout import Fanout
from kai_inventory.ws.hub import Hub
from kai_inventory.ws.queue_watch import setup_queue_watch

__all__ = ["WS_STATE", "WsState", "setup_ws"]

log = logging.getLogger(__name__)


def setup_ws(app: web.Application, *, demo: bool = False) -> None:
    state = WsState()
    app[WS_STATE] = state
    app[OPEN_WEBSOCKETS] = weakref.WeakSet()
    app.router.add_get("/v1/ws", ws_handler)
    app.router.add_get("/", index_handler)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    if demo:  # a route only in demo mode, so that the OpenAPI document has it only then
        app.router.add_get("/v1/demo/token", demo_token_handler)
    app.cleanup_ctx.append(_fanout_ctx)
    setup_queue_watch(app)  # waiting room: live queue position (after the API's ctx)
    app.on_shutdown.append(_on_shutdown)


async def _fanout_ctx(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    state = app[WS_STATE]
    settings = ctx.settings
    hub = Hub()
    broker: Broker
    if settings.is_cluster:  # sharded pub/sub: SSUBSCRIBE on each schedule slot's master
        broker = ClusterBroker(settings.redis_url, Keys(settings.key_prefix))
    else:
        broker = RedisBroker(settings.redis_url, Keys(settings.key_prefix))
    sales = getattr(ctx, "sales", None)
    resolve = getattr(sales, "ensure_schedule", None)
    fanout = Fanout(ctx.inventory, broker, hub, settings.ws_coalesce_ms, resolve_layout=resolve)
    await fanout.start()
    state.settings, state.hub, state.fanout = settings, hub, fanout
    state.verifier = TokenVerifier(settings.jwt_secret)
    try:
        yield
    finally:
        await close_all(hub, app[OPEN_WEBSOCKETS])
        await fanout.stop()


async def _on_shutdown(app: web.Application) -> None:
    await close_all(app[WS_STATE].hub, app[OPEN_WEBSOCKETS])
