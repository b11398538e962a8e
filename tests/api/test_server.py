"""``kai-inventory serve --workers 2``: the HTTP race for the last seats, and graceful stop."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator

import aiohttp
import pytest

from kai_inventory.settings import Settings
from tests.api.conftest import (
    ADMIN_HEADERS,
    ServerProcess,
    auth,
    class_hold,
    new_schedule_id,
    schedule_body,
)


@pytest.fixture
def two_workers(api_settings: Settings) -> Iterator[ServerProcess]:
    server = ServerProcess(api_settings, workers=2)
    try:
        server.wait_ready()
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"serve exited {code}: {server.stderr()}"


async def test_200_clients_race_for_the_last_seats_over_two_processes(
    two_workers: ServerProcess,
) -> None:
    url = two_workers.url
    schedule_id = new_schedule_id()
    economy = ["1A", "1B", "1C", "2A", "2B", "2C", "3A", "3B"]
    async with aiohttp.ClientSession() as admin:
        put = await admin.put(
            f"{url}/v1/admin/schedules/{schedule_id}",
            json=schedule_body(economy=economy),
            headers=ADMIN_HEADERS,
        )
        assert put.status == 201, await put.text()
        # five of the eight economy seats are taken on the whole route: three are left
        early = await admin.post(
            f"{url}/v1/holds",
            json={
                "schedule_id": schedule_id,
                "from": "GMR",
                "to": "YK",
                "seats": ["2-1A", "2-1B", "2-1C", "2-2A"],
            },
            headers=auth("early-bird"),
        )
        assert early.status == 201, await early.text()
        one_leg = await admin.post(
            f"{url}/v1/holds",
            json={"schedule_id": schedule_id, "from": "CN", "to": "PWT", "seats": ["2-2B"]},
            headers=auth("early-bird-2"),
        )
        assert one_leg.status == 201

    start = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # one connection per client

    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(i: int) -> tuple[int, dict[str, object]]:
            await start.wait()
            async with session.post(
                f"{url}/v1/holds",
                json=class_hold(schedule_id),
                headers=auth(f"racer-{i}"),
            ) as response:
                return response.status, await response.json(content_type=None)

        tasks = [asyncio.create_task(client(i)) for i in range(200)]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)

    statuses = collections.Counter(status for status, _ in results)
    assert statuses == {201: 3, 409: 197}, statuses
    won = sorted(seat for status, body in results if status == 201 for seat in body["seats"])  # type: ignore[union-attr]
    assert won == ["2-2C", "2-3A", "2-3B"]
    assert {body["code"] for status, body in results if status == 409} == {"insufficient_inventory"}

    async with aiohttp.ClientSession() as reader:
        seatmap = await (await reader.get(f"{url}/v1/schedules/{schedule_id}/seatmap")).json()
        availability = await (
            await reader.get(f"{url}/v1/schedules/{schedule_id}/availability")
        ).json()
    states = {s["seat"]: s["state"] for c in seatmap["coaches"] for s in c["seats"]}
    assert sorted(
        seat for seat, state in states.items() if seat.startswith("2-") and state == "held"
    ) == sorted([f"2-{s}" for s in economy])
    assert availability["classes"][1] == {"class": "economy", "total": 8, "available": 0}


async def test_workers_stop_gracefully_on_sigterm(api_settings: Settings) -> None:
    server = ServerProcess(api_settings, workers=2)
    server.wait_ready()
    async with aiohttp.ClientSession() as session:
        assert (await session.get(f"{server.url}/healthz")).status == 200
    code = await asyncio.to_thread(server.stop)
    assert code == 0, server.stderr()


async def test_sigterm_closes_websockets_with_1001(api_settings: Settings) -> None:
    import signal

    server = ServerProcess(api_settings, workers=1)
    try:
        server.wait_ready()
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.url}/v1/ws") as ws,
        ):
            await ws.send_json({"op": "ping"})
            assert (await ws.receive_json(timeout=5))["type"] == "pong"
            server.proc.send_signal(signal.SIGTERM)
            message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.CLOSE
            assert message.data == 1001
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0, server.stderr()


def test_a_started_worker_freezes_its_startup_objects_and_collects_young_objects_less_often() -> (
    None
):
    import gc

    from kai_inventory.server import GC_GEN0, settle_garbage_collector

    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_threshold() == (GC_GEN0, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
