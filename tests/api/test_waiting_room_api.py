"""Peak-sale waiting room over HTTP: sales, queue, admission tokens and the hold check."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from kai_inventory.api.waiting_room import WAITING_ROOM
from kai_inventory.context import CTX
from kai_inventory.settings import Settings
from tests.api.conftest import ADMIN_HEADERS, Client, auth, create_schedule, problem


def _at(seconds: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.isoformat()


def sale_body(schedules: list[str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schedules": schedules,
        "opens_at": _at(0),
        "closes_at": _at(3600),
        "admit_per_s": 1000,
        "max_admitted": 100,
        "idle_s": 300,
        "admission_ttl_s": 900,
    }
    body.update(overrides)
    return body


async def put_sale(client: Client, body: dict[str, Any], sale_id: str | None = None) -> str:
    sale_id = sale_id or "S" + secrets.token_hex(5)
    response = await client.put(f"/v1/admin/sales/{sale_id}", json=body, headers=ADMIN_HEADERS)
    assert response.status == 201, await response.text()
    return sale_id


async def admitted(client: Client, sale_id: str, user: str) -> dict[str, Any]:
    """Join and wait for the background admission loop to admit ``user``."""
    for _ in range(50):
        response = await client.post(f"/v1/sales/{sale_id}/queue", headers=auth(user))
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await response.json()
        if body["status"] == "admitted":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user} never admitted")


def hold_body(schedule_id: str, seat: str = "1-1A") -> dict[str, Any]:
    return {"schedule_id": schedule_id, "from": "GMR", "to": "YK", "seats": [seat]}


async def test_a_sale_is_created_then_unchanged_and_a_schedule_is_in_one_active_sale(
    client: Client,
) -> None:
    schedule = await create_schedule(client)
    body = sale_body([schedule])
    sale_id = await put_sale(client, body)
    again = await client.put(f"/v1/admin/sales/{sale_id}", json=body, headers=ADMIN_HEADERS)
    assert again.status == 200
    assert (await again.json())["result"] == "unchanged"
    clash = await client.put(
        "/v1/admin/sales/other", json=sale_body([schedule]), headers=ADMIN_HEADERS
    )
    conflict = await problem(clash, 409, "schedule_in_sale")
    assert conflict["sale_id"] == sale_id


async def test_invalid_sales_are_422_and_need_the_admin_scope(client: Client) -> None:
    schedule = await create_schedule(client)
    unknown = await client.put(
        "/v1/admin/sales/x1", json=sale_body(["nope"]), headers=ADMIN_HEADERS
    )
    assert (await problem(unknown, 422, "invalid_request"))["errors"][0]["field"] == "schedules[0]"
    backwards = sale_body([schedule], closes_at=_at(-10))
    response = await client.put("/v1/admin/sales/x2", json=backwards, headers=ADMIN_HEADERS)
    await problem(response, 422, "invalid_request")
    response = await client.put("/v1/admin/sales/x3", json=sale_body([schedule]), headers=auth("u"))
    await problem(response, 403, "forbidden")


async def test_queue_join_status_and_errors(client: Client) -> None:
    schedule = await create_schedule(client)
    sale_id = await put_sale(client, sale_body([schedule], opens_at=_at(600)))
    first = await client.post(f"/v1/sales/{sale_id}/queue", headers=auth("budi"))
    assert first.status == 201
    place = await first.json()
    assert place["status"] == "waiting"
    assert place["sale_id"] == sale_id
    assert (place["position"], place["ahead"]) == (1, 0)
    assert place["estimated_wait_s"] >= 599
    assert "admission_token" not in place
    again = await client.post(f"/v1/sales/{sale_id}/queue", headers=auth("budi"))
    assert (await again.json())["ticket"] == place["ticket"]
    me = await client.get(f"/v1/sales/{sale_id}/queue/me", headers=auth("budi"))
    assert (await me.json())["ticket"] == place["ticket"]
    stranger = await client.get(f"/v1/sales/{sale_id}/queue/me", headers=auth("siti"))
    assert (await problem(stranger, 403, "not_admitted"))["sale_id"] == sale_id
    missing = await client.post("/v1/sales/nosuch/queue", headers=auth("budi"))
    assert (await problem(missing, 404, "sale_not_found"))["sale_id"] == "nosuch"
    anonymous = await client.post(f"/v1/sales/{sale_id}/queue")
    await problem(anonymous, 401, "unauthorized")


async def test_joining_after_closes_at_is_409_sale_not_open(client: Client) -> None:
    schedule = await create_schedule(client)
    sale_id = await put_sale(client, sale_body([schedule], opens_at=_at(-60), closes_at=_at(0.2)))
    await asyncio.sleep(0.3)
    response = await client.post(f"/v1/sales/{sale_id}/queue", headers=auth("budi"))
    assert (await problem(response, 409, "sale_not_open"))["sale_id"] == sale_id


async def test_holds_on_a_sale_schedule_need_the_users_own_admission(client: Client) -> None:
    in_sale = await create_schedule(client)
    outside = await create_schedule(client)
    sale_id = await put_sale(client, sale_body([in_sale]))

    without = await client.post("/v1/holds", json=hold_body(in_sale), headers=auth("budi"))
    assert (await problem(without, 403, "not_admitted"))["sale_id"] == sale_id
    free = await client.post("/v1/holds", json=hold_body(outside), headers=auth("budi"))
    assert free.status == 201, await free.text()

    place = await admitted(client, sale_id, "budi")
    assert place["position"] == 0
    assert place["admission_expires_at"].endswith("Z")
    token = place["admission_token"]
    me = await client.get(f"/v1/sales/{sale_id}/queue/me", headers=auth("budi"))
    assert (await me.json())["admission_token"] == token

    others = await client.post(
        "/v1/holds",
        json=hold_body(in_sale, "1-1B"),
        headers={**auth("siti"), "X-Admission-Token": token},
    )
    await problem(others, 403, "not_admitted")
    forged = await client.post(
        "/v1/holds",
        json=hold_body(in_sale, "1-1B"),
        headers={**auth("budi"), "X-Admission-Token": token[:-3] + "abc"},
    )
    await problem(forged, 403, "not_admitted")
    held = await client.post(
        "/v1/holds", json=hold_body(in_sale), headers={**auth("budi"), "X-Admission-Token": token}
    )
    assert held.status == 201, await held.text()


async def test_an_expired_admission_stops_working_for_holds(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client()
    schedule = await create_schedule(client)
    sale_id = await put_sale(client, sale_body([schedule], admission_ttl_s=1))
    token = (await admitted(client, sale_id, "budi"))["admission_token"]
    await asyncio.sleep(1.1)
    late = await client.post(
        "/v1/holds", json=hold_body(schedule), headers={**auth("budi"), "X-Admission-Token": token}
    )
    assert (await problem(late, 403, "not_admitted"))["sale_id"] == sale_id


async def test_the_openapi_document_describes_the_waiting_room(client: Client) -> None:
    document = await (await client.get("/v1/openapi.json")).json()
    for path in (
        "/v1/admin/sales/{sale_id}",
        "/v1/sales/{sale_id}/queue",
        "/v1/sales/{sale_id}/queue/me",
    ):
        assert path in document["paths"]
    assert "QueuePlace" in document["components"]["schemas"]
    create_hold = document["paths"]["/v1/holds"]["post"]
    assert "X-Admission-Token" in {p["name"] for p in create_hold["parameters"]}


# --- sales survive Redis losing its data (Postgres ``sales`` table, recovery) ----------------


async def _sale_row(dsn: str, sale_id: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow("SELECT * FROM sales WHERE id = $1", sale_id)
    finally:
        await conn.close()


async def _drop_redis_keys(settings: Settings, keep_epoch: bool = False) -> None:
    """What a Redis restart without persistence does to us (our prefix only: shared server).
    ``keep_epoch``: lose the data but not the marker (Redis lost some keys, not everything)."""
    client = aioredis.from_url(settings.redis_url)
    try:
        keys = [
            k
            async for k in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000)
            if not (keep_epoch and k.endswith(b":epoch"))
        ]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_a_sale_put_is_stored_in_postgres_and_a_refused_one_is_not(
    client: Client, api_settings: Settings
) -> None:
    schedule = await create_schedule(client)
    body = sale_body([schedule], admit_per_s=7, max_admitted=11, idle_s=60, admission_ttl_s=120)
    sale_id = await put_sale(client, body)
    row = await _sale_row(api_settings.database_url, sale_id)
    assert row is not None
    assert list(row["schedule_ids"]) == [schedule]
    assert abs(row["opens_at"] - dt.datetime.fromisoformat(body["opens_at"])) < dt.timedelta(
        milliseconds=1
    )
    assert abs(row["closes_at"] - dt.datetime.fromisoformat(body["closes_at"])) < dt.timedelta(
        milliseconds=1
    )
    assert (row["admit_per_s"], row["max_admitted"], row["idle_s"], row["admission_ttl_s"]) == (
        7,
        11,
        60,
        120,
    )
    updated = await client.put(
        f"/v1/admin/sales/{sale_id}", json={**body, "admit_per_s": 9}, headers=ADMIN_HEADERS
    )
    assert (updated.status, (await updated.json())["result"]) == (200, "updated")
    row = await _sale_row(api_settings.database_url, sale_id)
    assert row is not None
    assert row["admit_per_s"] == 9

    clash_id = "S" + secrets.token_hex(5)
    clash = await client.put(
        f"/v1/admin/sales/{clash_id}", json=sale_body([schedule]), headers=ADMIN_HEADERS
    )
    await problem(clash, 409, "schedule_in_sale")
    assert await _sale_row(api_settings.database_url, clash_id) is None


async def test_after_redis_lost_everything_an_active_sale_still_gates_its_schedules(
    client: Client, api_settings: Settings
) -> None:
    in_sale = await create_schedule(client)
    sale_id = await put_sale(client, sale_body([in_sale], opens_at=_at(-60), closes_at=_at(3600)))
    sales = client.app[CTX].sales
    await sales.watch_epoch()  # marker set (the background loop may have done it already)

    await _drop_redis_keys(api_settings)
    assert not await sales.inventory.epoch_present()
    room = client.app[WAITING_ROOM]
    await room.refresh_directory()  # what the admission loop does every second
    assert room.active_sale(in_sale) is None
    await sales.watch_epoch()  # what the background loop does within a second, no operator
    assert await sales.inventory.epoch_present()

    without = await client.post("/v1/holds", json=hold_body(in_sale), headers=auth("budi"))
    assert (await problem(without, 403, "not_admitted"))["sale_id"] == sale_id
    me = await client.get(f"/v1/sales/{sale_id}/queue/me", headers=auth("budi"))
    # the queue was lost with Redis: no place any more, but the sale is there (not 404)
    assert (await problem(me, 403, "not_admitted"))["sale_id"] == sale_id
    token = (await admitted(client, sale_id, "budi"))["admission_token"]  # join again
    held = await client.post(
        "/v1/holds", json=hold_body(in_sale), headers={**auth("budi"), "X-Admission-Token": token}
    )
    assert held.status == 201, await held.text()


async def test_a_schedule_reopened_from_postgres_comes_back_with_its_active_sale(
    client: Client, api_settings: Settings
) -> None:
    in_sale = await create_schedule(client)
    sale_id = await put_sale(client, sale_body([in_sale], opens_at=_at(-60), closes_at=_at(3600)))
    await client.app[CTX].sales.watch_epoch()
    room = client.app[WAITING_ROOM]

    await _drop_redis_keys(api_settings, keep_epoch=True)  # no epoch alarm: per-schedule path
    for _ in range(60):  # the room's schedule -> sale cache follows Redis within a second
        await room.refresh_directory()
        if room.active_sale(in_sale) is None:
            break
        await asyncio.sleep(0.05)
    assert room.active_sale(in_sale) is None

    without = await client.post("/v1/holds", json=hold_body(in_sale), headers=auth("budi"))
    assert (await problem(without, 403, "not_admitted"))["sale_id"] == sale_id
    assert room.active_sale(in_sale) == sale_id
    me = await client.get(f"/v1/sales/{sale_id}/queue/me", headers=auth("budi"))
    await problem(me, 403, "not_admitted")
