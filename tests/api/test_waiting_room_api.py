"""Peak-sale waiting room over HTTP: sales, queue, admission tokens and the hold check."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

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
