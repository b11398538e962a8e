"""Live queue position over the WebSocket (the full app: API + ws + waiting room)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from kai_inventory.api.auth import issue_token
from kai_inventory.ws.queue_watch import bucket
from tests.api.conftest import (  # noqa: F401  (fixtures)
    ADMIN_HEADERS,
    SECRET,
    Client,
    api_dsn,
    api_settings,
    auth,
    create_schedule,
    make_client,
)
from tests.api.test_waiting_room_api import hold_body, put_sale, sale_body


def test_positions_are_shown_in_buckets_never_better_than_the_truth() -> None:
    assert [bucket(p) for p in (1, 100, 101, 999, 1001, 10_001)] == [
        1,
        100,
        110,
        1000,
        1100,
        11_000,
    ]
    assert all(bucket(p) >= p for p in range(1, 30_000, 7))


async def _frames(
    client: Client,
    user: str,
    sale_id: str,
    until: str,
    limit_s: float,
    scope: str = "inventory:read inventory:hold",
) -> list[tuple[float, dict[str, Any]]]:
    token = issue_token(SECRET, user, scope, 600)
    frames: list[tuple[float, dict[str, Any]]] = []
    async with client.session.ws_connect(client.make_url(f"/v1/ws?token={token}")) as ws:
        await ws.send_json({"op": "queue", "sale_id": sale_id})
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                msg = await ws.receive(timeout=deadline - time.monotonic())
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frames.append((time.monotonic(), msg.json()))
            if frames[-1][1]["type"] == until:
                break
    return frames


async def test_queue_op_streams_positions_at_most_once_a_second_then_the_admission(
    make_client: Callable[..., Awaitable[Client]],  # noqa: F811
) -> None:
    client = await make_client()
    schedule = await create_schedule(client)
    from tests.api.test_waiting_room_api import _at

    sale_id = await put_sale(client, sale_body([schedule], opens_at=_at(0.3), admit_per_s=4))
    for i in range(8):  # eight users ahead, joined over HTTP before the opening
        response = await client.post(f"/v1/sales/{sale_id}/queue", headers=auth(f"ahead{i}"))
        assert response.status == 201
    await asyncio.sleep(0.4)  # budi comes after the opening: behind all eight
    frames = await _frames(client, "budi", sale_id, "admitted", limit_s=8)

    kinds = [f["type"] for _, f in frames]
    assert kinds[-1] == "admitted", frames
    positions = [f for _, f in frames if f["type"] == "queue"]
    assert len(positions) >= 2
    assert positions[0]["position"] >= 2
    assert all(set(p) == {"type", "position", "ahead", "estimated_wait_s"} for p in positions)
    assert [p["position"] for p in positions] == sorted(
        (p["position"] for p in positions), reverse=True
    )
    assert all(p["ahead"] == p["position"] - 1 for p in positions)
    times = [t for t, f in frames if f["type"] == "queue"]
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times))
    token = frames[-1][1]["admission_token"]
    assert frames[-1][1]["admission_expires_at"].endswith("Z")
    held = await client.post(
        "/v1/holds", json=hold_body(schedule), headers={**auth("budi"), "X-Admission-Token": token}
    )
    assert held.status == 201, await held.text()


async def test_queue_op_on_an_unknown_sale_is_an_error_frame(
    make_client: Callable[..., Awaitable[Client]],  # noqa: F811
) -> None:
    client = await make_client()
    frames = await _frames(client, "budi", "nosuch", "error", limit_s=3)
    assert frames[-1][1]["type"] == "error"
    assert frames[-1][1]["code"] == "sale_not_found"


async def test_queue_op_takes_the_scope_of_its_rest_twin(
    make_client: Callable[..., Awaitable[Client]],  # noqa: F811
) -> None:
    client = await make_client()
    # a hold-only token opens the socket and reaches the queue (here: no such sale)
    frames = await _frames(client, "budi", "nosuch", "error", limit_s=3, scope="inventory:hold")
    assert frames[-1][1]["code"] == "sale_not_found"
    # a read-only token may not queue, as POST /v1/sales/{id}/queue
    frames = await _frames(client, "budi", "nosuch", "error", limit_s=3, scope="inventory:read")
    assert frames[-1][1]["code"] == "forbidden"
