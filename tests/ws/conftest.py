"""A small real app for the WebSocket tests: real Redis, real engine Inventory, the ws front.

The full app (API + sales) is not needed to exercise the protocol: the fixture builds an
AppContext-like object with a real Redis client and a real ``Inventory`` and calls
``setup_ws`` on a bare aiohttp application, as ``app.py`` does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from kai_inventory.context import CTX
from kai_inventory.engine.inventory import HoldRequest, Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.engine.layout import Layout
from kai_inventory.settings import Settings
from kai_inventory.ws import setup_ws

STOPS = ["GMR", "CN", "YK"]
COACHES: list[tuple[int, str, list[str]]] = [
    (1, "executive", ["1A", "1B", "1C", "1D"]),
    (2, "economy", ["1A", "1B", "1C", "1D", "2A", "2B"]),
]


@dataclasses.dataclass
class MiniContext:
    settings: Settings
    redis: aioredis.Redis
    inventory: Inventory
    pool: Any = None
    sales: Any = None


def make_layout(schedule_id: str) -> Layout:
    day = 86_400_000
    now = int(time.time() * 1000)
    return Layout.build(
        schedule_id, STOPS, [now + day, now + day + 3_600_000, now + 2 * day], COACHES
    )


@pytest.fixture
def ws_settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        ws_coalesce_ms=20,
        jwt_secret="test-secret-0123456789abcdef-websocket",
    )


@pytest.fixture
async def inventory(redis_url: str, key_prefix: str) -> AsyncIterator[Inventory]:
    client = aioredis.from_url(redis_url)
    inv = Inventory(client, Keys(key_prefix))
    await inv.load_scripts()
    yield inv
    await client.aclose()


@pytest.fixture
async def schedule(inventory: Inventory) -> Layout:
    layout = make_layout("TST-1")
    result = await inventory.open(layout)
    assert result.code == 0
    return layout


Server = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def ws_server(ws_settings: Settings) -> AsyncIterator[Server]:
    """start(**setting overrides) -> a running TestServer with the ws front."""
    servers: list[TestServer] = []
    clients: list[aioredis.Redis] = []

    async def start(**overrides: Any) -> TestServer:
        settings = ws_settings.replace(**overrides)
        client = aioredis.from_url(settings.redis_url)
        clients.append(client)
        inv = Inventory(client, Keys(settings.key_prefix))
        await inv.load_scripts()
        app = web.Application()
        app[CTX] = MiniContext(settings, client, inv)  # type: ignore[arg-type]
        setup_ws(app, demo=settings.demo)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()
    for client in clients:
        await client.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = msgspec.json.decode(msg.data)
    return data


async def no_message(ws: aiohttp.ClientWebSocketResponse, within: float) -> None:
    """Assert nothing arrives within ``within`` seconds."""
    try:
        msg = await ws.receive(timeout=within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {msg}")


async def subscribe(
    ws: aiohttp.ClientWebSocketResponse,
    schedule_id: str = "TST-1",
    from_: str | None = None,
    to: str | None = None,
    seats: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    op: dict[str, Any] = {"op": "subscribe", "schedule_id": schedule_id, "seats": seats}
    if from_:
        op["from"] = from_
    if to:
        op["to"] = to
    await ws.send_json(op)
    subscribed = await recv(ws)
    assert subscribed["type"] == "subscribed", subscribed
    snapshot = await recv(ws)
    assert snapshot["type"] == "snapshot", snapshot
    return subscribed, snapshot


async def hold(
    inv: Inventory, layout: Layout, seats: list[str], a: int = 0, b: int = 2, user: str = "u1"
) -> str:
    idx = [layout.seat_index(s) for s in seats]
    out = await inv.hold(
        HoldRequest(
            schedule_id=layout.schedule_id,
            user=user,
            a=a,
            b=b,
            ttl_ms=60_000,
            seats=[i for i in idx if i is not None],
        )
    )
    assert out.code == 0, out
    assert out.hold is not None
    return out.hold.hold_id
