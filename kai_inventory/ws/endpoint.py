"""aiohttp handlers: ``GET /v1/ws``, the seat-map page ``GET /``, and the demo token.

Thin adapters: the handler decodes client messages (``protocol``), answers ping/auth itself
and hands subscriptions to the fan-out. A bad message gets an error frame and the
connection stays; a frame over 4 KiB closes it with 1009 (``max_msg_size``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from kai_inventory.api.auth import TokenVerifier
from kai_inventory.api.errors import ApiError
from kai_inventory.api.middleware import REQUEST_ID_HEADER, request_id_of
from kai_inventory.settings import Settings
from kai_inventory.ws import protocol
from kai_inventory.ws.auth import check_read, demo_token, demo_user, may_hold, problem_response
from kai_inventory.ws.client import Client
from kai_inventory.ws.fanout import Fanout
from kai_inventory.ws.hub import Hub
from kai_inventory.ws.queue_watch import QUEUE_WATCHER, QueueOp, QueueWatcher

log = logging.getLogger(__name__)

MAX_FRAME = 4096
HEARTBEAT_S = 20.0
AUTH_DEADLINE_S = 10.0
STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclasses.dataclass
class WsState:
    """Filled in at start-up by the cleanup context (the app is frozen by then)."""

    settings: Settings | None = None
    hub: Hub | None = None
    fanout: Fanout | None = None
    verifier: TokenVerifier | None = None


WS_STATE = web.AppKey("kai_ws", WsState)
# every WebSocket from its handshake on, closed with 1001 at shutdown (``close_all``)
OPEN_WEBSOCKETS = web.AppKey("kai_open_websockets", weakref.WeakSet[web.WebSocketResponse])


def _origin_allowed(settings: Settings, request: web.Request) -> bool:
    if not settings.allowed_origins:
        return True
    origin = request.headers.get("Origin")
    # non-browser clients send no Origin; the check guards browsers against other sites
    return origin is None or origin in settings.allowed_origins


async def ws_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[WS_STATE]
    settings, hub, fanout, verifier = state.settings, state.hub, state.fanout, state.verifier
    if settings is None or hub is None or fanout is None or verifier is None:
        return problem_response(ApiError("dependency_unavailable", "starting up", retry_after_s=1))
    if not _origin_allowed(settings, request):
        return problem_response(ApiError("forbidden", "origin not allowed"))
    user: str | None = None
    holder = False
    token = request.query.get("token")
    if token is not None:
        try:
            principal = check_read(verifier, token)
        except ApiError as exc:
            return problem_response(exc)
        user, holder = principal.sub, may_hold(principal)
    authed = settings.anonymous_reads or user is not None

    # aiohttp refuses a frame of max_msg_size bytes or more; the contract allows 4 KiB exactly
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_FRAME + 1, compress=False)
    ws.headers[REQUEST_ID_HEADER] = request_id_of(request)  # prepared here, before the middleware
    request.app[OPEN_WEBSOCKETS].add(ws)
    await ws.prepare(request)
    client = Client(ws, hub.next_conn_id(), fanout.resync, transport=request.transport)
    client.user = user
    client.holder = holder
    client.authenticated = authed
    hub.add_client(client)
    client.start()
    auth_by = time.monotonic() + AUTH_DEADLINE_S
    try:
        while True:
            timeout = None if client.authenticated else max(0.0, auth_by - time.monotonic())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                client.send(protocol.error_frame("unauthorized", "no auth message in time"))
                await asyncio.sleep(0.05)  # let the writer flush the error
                await client.close(1008, b"authentication required")
                break
            if msg.type == WSMsgType.TEXT:
                await _handle(client, fanout, verifier, msg.data, request.app.get(QUEUE_WATCHER))
            elif msg.type == WSMsgType.BINARY:
                client.send(protocol.error_frame("invalid_message", "messages are JSON text"))
            else:  # CLOSE, CLOSING, CLOSED, ERROR (1009 and protocol errors close by themselves)
                break
    finally:
        fanout.drop_client(client)
        await client.stop_writer()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _handle(
    client: Client,
    fanout: Fanout,
    verifier: TokenVerifier,
    data: str,
    queue_watcher: QueueWatcher | None = None,
) -> None:
    try:
        op = protocol.decode_client(data)
        match op:
            case protocol.Ping():
                client.send(protocol.PONG_FRAME)
            case protocol.Auth(token=token):
                try:
                    principal = check_read(verifier, token)
                except ApiError as exc:
                    raise protocol.ProtocolError(exc.code, exc.detail) from None
                client.user = principal.sub
                client.holder = may_hold(principal)
                client.authenticated = True
                client.send(protocol.encode(protocol.Authenticated(principal.sub or "")))
            case protocol.Subscribe():
                if not client.authenticated:
                    raise protocol.ProtocolError("unauthorized", "send an auth message first")
                await fanout.subscribe(client, op)
            case QueueOp(sale_id=sale_id):  # peak-sale waiting room (ws/queue_watch.py)
                if queue_watcher is None or client.user is None:
                    raise protocol.ProtocolError("unauthorized", "the queue needs a token")
                await queue_watcher.watch(client, sale_id)
            case protocol.Unsubscribe(sub=sub_id):
                fanout.unsubscribe(client, sub_id)
                client.send(protocol.encode(protocol.Unsubscribed(sub_id)))
    except protocol.ProtocolError as exc:
        client.send(protocol.error_frame(exc.code, exc.message))
    except (ConnectionError, OSError) as exc:
        log.warning("ws: dependency failed while handling a message: %s", exc)
        client.send(protocol.error_frame("dependency_unavailable", "try again shortly"))


async def index_handler(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def demo_token_handler(request: web.Request) -> web.Response:
    state = request.app[WS_STATE]
    settings = state.settings
    if settings is None or not settings.demo:
        return problem_response(ApiError("not_found", "demo mode is off"))
    user = demo_user(request.query.get("user"))
    token = demo_token(settings.jwt_secret, user)
    return web.json_response(
        {"token": token, "user": user, "scope": "inventory:read inventory:hold"},
        headers={"Cache-Control": "no-store"},
    )


async def close_all(hub: Hub | None, sockets: weakref.WeakSet[web.WebSocketResponse]) -> None:
    """Server shutdown: every WebSocket goes away (1001) so its handler finishes; the hub's
    clients through their writers, then any other still open (a handshake under way)."""
    clients = list(hub.clients.values()) if hub is not None else []
    await asyncio.gather(
        *(c.close(1001, b"server shutting down") for c in clients), return_exceptions=True
    )
    rest = [ws for ws in sockets if not ws.closed]
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in rest),
        return_exceptions=True,
    )
