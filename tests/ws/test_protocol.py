"""The /v1/ws protocol with a real WebSocket client, a real Redis and the real engine."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt

from kai_inventory.engine.inventory import Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.engine.layout import Layout
from tests.ws.conftest import Server, hold, no_message, recv, subscribe

SECRET = "test-secret-0123456789abcdef-websocket"


def token(scope: str = "inventory:read", sub: str = "alice", exp_in: int = 600) -> str:
    return jwt.encode(
        {"sub": sub, "scope": scope, "exp": int(time.time()) + exp_in}, SECRET, algorithm="HS256"
    )


async def test_subscribe_answers_subscribed_then_a_snapshot_with_classes_and_seats(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        subscribed, snap = await subscribe(ws, from_="GMR", to="CN")
        assert subscribed == {
            "type": "subscribed",
            "sub": subscribed["sub"],
            "schedule_id": "TST-1",
            "from": "GMR",
            "to": "CN",
            "seats": True,
        }
        assert snap["sub"] == subscribed["sub"]
        assert (snap["schedule_id"], snap["from"], snap["to"]) == ("TST-1", "GMR", "CN")
        assert snap["classes"] == [
            {"class": "executive", "total": 4, "available": 4},
            {"class": "economy", "total": 6, "available": 6},
        ]
        assert snap["seats"] == {s: "free" for s in schedule.seat_ids}
        assert isinstance(snap["version"], int)


async def test_a_hold_sends_an_update_with_only_the_changed_seats_and_a_higher_version(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        subscribed, snap = await subscribe(ws)
        await hold(inventory, schedule, ["1-1A"])
        update = await recv(ws)
        assert update["type"] == "update"
        assert update["sub"] == subscribed["sub"]
        assert update["version"] > snap["version"]
        assert update["seats"] == {"1-1A": "held"}
        assert update["classes"][0] == {"class": "executive", "total": 4, "available": 3}


async def test_without_seats_the_update_carries_classes_only(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        _, snap = await subscribe(ws, seats=False)
        assert "seats" not in snap
        await hold(inventory, schedule, ["2-1A"])
        update = await recv(ws)
        assert "seats" not in update
        assert update["classes"][1]["available"] == 5


async def test_changes_inside_the_coalescing_window_merge_into_one_update(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    server = await ws_server(ws_coalesce_ms=300)
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        await subscribe(ws)
        for seat in ("1-1A", "1-1B", "2-1A"):
            await hold(inventory, schedule, [seat], user=seat)
        update = await recv(ws)
        assert update["seats"] == {"1-1A": "held", "1-1B": "held", "2-1A": "held"}
        await no_message(ws, 0.5)


async def test_a_change_on_another_journey_does_not_wake_a_subscriber(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        first, _ = await subscribe(ws, from_="GMR", to="CN")
        second, _ = await subscribe(ws, from_="CN", to="YK")
        await hold(inventory, schedule, ["1-1A"], a=1, b=2)  # CN -> YK only
        update = await recv(ws)
        assert update["sub"] == second["sub"]
        assert update["seats"] == {"1-1A": "held"}
        await no_message(ws, 0.3)
        await hold(inventory, schedule, ["1-1B"], a=0, b=2)  # GMR -> YK touches both
        got = {(await recv(ws))["sub"], (await recv(ws))["sub"]}
        assert got == {first["sub"], second["sub"]}


async def test_ping_pong_and_unsubscribe_stops_updates(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        await ws.send_json({"op": "ping"})
        assert await recv(ws) == {"type": "pong"}
        subscribed, _ = await subscribe(ws)
        await ws.send_json({"op": "unsubscribe", "sub": subscribed["sub"]})
        assert await recv(ws) == {"type": "unsubscribed", "sub": subscribed["sub"]}
        await hold(inventory, schedule, ["1-1A"])
        await no_message(ws, 0.3)
        await ws.send_json({"op": "unsubscribe", "sub": subscribed["sub"]})
        error = await recv(ws)
        assert (error["type"], error["code"]) == ("error", "subscription_not_found")


async def test_bad_messages_get_an_error_and_the_connection_stays(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        cases = [
            ("{not json", "malformed_json"),
            ('{"op": "dance"}', "invalid_message"),
            ('{"op": "subscribe"}', "invalid_message"),
            ('{"op": "subscribe", "schedule_id": "TST-1", "extra": 1}', "invalid_message"),
            ('{"op": "subscribe", "schedule_id": "nope"}', "schedule_not_found"),
            (
                '{"op": "subscribe", "schedule_id": "TST-1", "from": "YK", "to": "GMR"}',
                "invalid_request",
            ),
            (
                '{"op": "subscribe", "schedule_id": "TST-1", "from": "BD", "to": "YK"}',
                "invalid_request",
            ),
        ]
        for text, code in cases:
            await ws.send_str(text)
            error = await recv(ws)
            assert (error["type"], error["code"]) == ("error", code), text
            assert error["message"]
        await ws.send_bytes(b'{"op": "ping"}')
        assert (await recv(ws))["code"] == "invalid_message"
        await ws.send_json({"op": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def test_a_frame_over_4_kib_closes_the_connection_with_1009(
    ws_server: Server, session: aiohttp.ClientSession
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        await ws.send_str('{"op": "ping", "pad": "' + "x" * 4100 + '"}')
        msg = await ws.receive(timeout=3)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1009
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:  # 4 KiB exactly is fine
        body = '{"op": "ping"}'
        await ws.send_str(body + " " * (4096 - len(body)))
        assert await recv(ws) == {"type": "pong"}


async def test_the_21st_subscription_is_an_error_and_the_first_20_keep_working(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        for _ in range(20):
            await subscribe(ws, seats=False)
        await ws.send_json({"op": "subscribe", "schedule_id": "TST-1"})
        error = await recv(ws)
        assert (error["type"], error["code"]) == ("error", "too_many_subscriptions")
        await hold(inventory, schedule, ["1-1A"])
        subs = {(await recv(ws))["sub"] for _ in range(20)}
        assert len(subs) == 20


async def test_a_version_gap_in_the_events_is_answered_by_a_snapshot(
    ws_server: Server,
    session: aiohttp.ClientSession,
    schedule: Layout,
    inventory: Inventory,
    redis_client,
    key_prefix: str,
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        subscribed, snap = await subscribe(ws)
        # three changes whose events were lost: the version moves on without a publish
        await redis_client.hincrby(Keys(key_prefix).schedule("TST-1").meta, "ver", 3)
        await hold(inventory, schedule, ["1-1C"])
        msg = await recv(ws)
        assert msg["type"] == "snapshot"
        assert msg["sub"] == subscribed["sub"]
        assert msg["version"] >= snap["version"] + 4
        assert msg["seats"]["1-1C"] == "held"
        await hold(inventory, schedule, ["1-1D"])
        assert (await recv(ws))["type"] == "update"


async def test_schedule_status_changes_are_pushed(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        await subscribe(ws, seats=False)
        await subscribe(ws, seats=True)
        assert await inventory.set_status("TST-1", "delayed", 15, "signal fault") == 0
        status = await recv(ws)
        assert status == {
            "type": "schedule_status",
            "schedule_id": "TST-1",
            "status": "delayed",
            "delay_minutes": 15,
            "reason": "signal fault",
        }
        await no_message(ws, 0.3)  # once per connection, and no update: seats did not change
        assert await inventory.set_status("TST-1", "scheduled", 0, "") == 0
        assert (await recv(ws))["reason"] is None  # no reason: null, as on REST


async def test_updates_reach_a_subscriber_of_another_server_process(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    one = await ws_server()
    two = await ws_server()
    async with (
        session.ws_connect(one.make_url("/v1/ws")) as ws1,
        session.ws_connect(two.make_url("/v1/ws")) as ws2,
    ):
        await subscribe(ws1)
        await subscribe(ws2)
        await hold(inventory, schedule, ["2-2B"])
        assert (await recv(ws1))["seats"] == {"2-2B": "held"}
        assert (await recv(ws2))["seats"] == {"2-2B": "held"}


async def test_a_lost_pubsub_connection_is_followed_by_a_snapshot_for_every_subscription(
    ws_server: Server,
    session: aiohttp.ClientSession,
    schedule: Layout,
    inventory: Inventory,
    redis_client,
) -> None:
    from kai_inventory.ws import WS_STATE

    server = await ws_server()
    async with session.ws_connect(server.make_url("/v1/ws")) as ws:
        first, _ = await subscribe(ws, from_="GMR", to="CN")
        second, _ = await subscribe(ws, seats=False)
        fanout = server.app[WS_STATE].fanout
        assert fanout is not None
        name = fanout.broker.client_name  # type: ignore[attr-defined]
        clients = await redis_client.client_list()
        ids = [c["id"] for c in clients if c.get("name") == name]
        assert ids, "the broker's pub/sub connection is named"
        for cid in ids:
            await redis_client.client_kill_filter(_id=cid)
        await hold(inventory, schedule, ["1-1A"])  # may be lost while reconnecting
        seen: dict[str, dict] = {}
        deadline = asyncio.get_running_loop().time() + 5
        while len(seen) < 2 and asyncio.get_running_loop().time() < deadline:
            msg = await recv(ws, timeout=5)
            if msg["type"] == "snapshot":
                seen[msg["sub"]] = msg
        assert set(seen) == {first["sub"], second["sub"]}
        # after the resync, live updates flow again
        await hold(inventory, schedule, ["1-1B"])
        while True:
            msg = await recv(ws)
            if (msg["type"], msg["sub"]) == ("update", first["sub"]) and msg["seats"].get(
                "1-1B"
            ) == "held":
                break


async def test_with_anonymous_reads_off_a_token_is_needed(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout
) -> None:
    server = await ws_server(anonymous_reads=False)
    url = server.make_url("/v1/ws")
    async with session.ws_connect(url) as ws:
        await ws.send_json({"op": "subscribe", "schedule_id": "TST-1"})
        assert (await recv(ws))["code"] == "unauthorized"
        await ws.send_json({"op": "auth", "token": "garbage"})
        assert (await recv(ws))["code"] == "unauthorized"
        await ws.send_json({"op": "auth", "token": token(scope="billing:read")})
        assert (await recv(ws))["code"] == "forbidden"
        await ws.send_json({"op": "auth", "token": token()})
        assert await recv(ws) == {"type": "authenticated", "user": "alice"}
        await subscribe(ws)
    async with session.ws_connect(url.with_query(token=token())) as ws:
        await subscribe(ws)
    # a hold-scoped token reads, as on the REST reads (a booking client watches its seat map)
    async with session.ws_connect(url.with_query(token=token(scope="inventory:hold"))) as ws:
        await subscribe(ws)
    for bad, status in (
        (token(exp_in=-10), 401),
        ("x.y.z", 401),
        (token(scope="billing:read"), 403),
    ):
        async with session.get(url.with_query(token=bad)) as resp:
            assert resp.status == status
            assert resp.content_type == "application/problem+json"
    none_alg = jwt.encode(
        {"sub": "eve", "scope": "inventory:read", "exp": int(time.time()) + 60},
        None,
        algorithm="none",
    )
    async with session.get(url.with_query(token=none_alg)) as resp:
        assert resp.status == 401


async def test_only_allowed_origins_may_connect_when_they_are_set(
    ws_server: Server, session: aiohttp.ClientSession
) -> None:
    server = await ws_server(allowed_origins=("https://seats.example",))
    url = server.make_url("/v1/ws")
    async with session.ws_connect(url, origin="https://seats.example") as ws:
        await ws.send_json({"op": "ping"})
        assert await recv(ws) == {"type": "pong"}
    async with session.get(
        url,
        headers={
            "Origin": "https://evil.example",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as r:
        assert r.status == 403


async def test_demo_token_endpoint_only_answers_in_demo_mode(
    ws_server: Server, session: aiohttp.ClientSession
) -> None:
    off = await ws_server()
    async with session.get(off.make_url("/v1/demo/token")) as resp:
        assert resp.status == 404
    on = await ws_server(demo=True)
    async with session.get(on.make_url("/v1/demo/token"), params={"user": "demo-abc123"}) as r:
        body = await r.json()
    assert body["user"] == "demo-abc123"
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "demo-abc123"
    assert set(claims["scope"].split()) == {"inventory:read", "inventory:hold"}


async def test_the_seat_map_page_and_its_assets_are_served(
    ws_server: Server, session: aiohttp.ClientSession
) -> None:
    server = await ws_server()
    async with session.get(server.make_url("/")) as resp:
        assert resp.status == 200
        html = await resp.text()
    assert "/static/app.js" in html
    assert "/static/app.css" in html
    for asset in ("/static/app.js", "/static/app.css"):
        async with session.get(server.make_url(asset)) as resp:
            assert resp.status == 200
            assert len(await resp.read()) > 500
