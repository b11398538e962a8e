"""Bookings: read, cancel (seats back on sale), 404s; and user B can touch nothing of user A."""

from __future__ import annotations

from typing import Any

import pytest

from kai_inventory.context import CTX
from tests.api.conftest import (
    ADMIN_HEADERS,
    auth,
    confirm_body,
    create_schedule,
    problem,
)


async def book(client, user: str = "alice", seats: list[str] | None = None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    seats = seats or ["1-1A"]
    hold = await client.post(
        "/v1/holds",
        json={"schedule_id": schedule_id, "from": "CN", "to": "YK", "seats": seats},
        headers=auth(user),
    )
    assert hold.status == 201
    hold_id = (await hold.json())["hold_id"]
    response = await client.post(
        f"/v1/holds/{hold_id}/confirm", json=confirm_body(seats), headers=auth(user)
    )
    assert response.status == 201, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def test_booking_is_readable_by_its_owner_and_admin(client) -> None:  # type: ignore[no-untyped-def]
    booking = await book(client)
    url = f"/v1/bookings/{booking['booking_number']}"
    for headers in (auth("alice"), ADMIN_HEADERS):
        response = await client.get(url, headers=headers)
        assert response.status == 200
        assert await response.json() == booking


async def test_cancel_returns_the_refund_and_frees_the_seats(client) -> None:  # type: ignore[no-untyped-def]
    booking = await book(client, seats=["1-1A", "1-1B"])
    url = f"/v1/bookings/{booking['booking_number']}"
    response = await client.post(f"{url}/cancel", headers=auth("alice"))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "cancelled"
    assert body["booking_number"] == booking["booking_number"]
    assert set(body["refund"]) >= {"refund_reference", "amount", "status"}
    again = await client.post(f"{url}/cancel", headers=auth("alice"))
    assert again.status == 200
    assert (await again.json())["refund"] == body["refund"]
    assert (await (await client.get(url, headers=auth("alice"))).json())["status"] == "cancelled"
    seatmap = await (await client.get(f"/v1/schedules/{booking['schedule_id']}/seatmap")).json()
    assert all(s["state"] == "free" for c in seatmap["coaches"] for s in c["seats"])


@pytest.mark.parametrize("number", ["KAI0000000000", "nope", "x" * 65, "bad%20number"])
async def test_unknown_bookings_are_404(client, number: str) -> None:  # type: ignore[no-untyped-def]
    await problem(
        await client.get(f"/v1/bookings/{number}", headers=auth("alice")), 404, "booking_not_found"
    )
    await problem(
        await client.post(f"/v1/bookings/{number}/cancel", headers=auth("alice")),
        404,
        "booking_not_found",
    )


# --- security: another user's hold and booking ---------------------------------------------


async def test_user_b_cannot_read_release_or_confirm_a_hold_of_user_a(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    made = await client.post(
        "/v1/holds",
        json={"schedule_id": schedule_id, "from": "GMR", "to": "YK", "seats": ["1-1A"]},
        headers=auth("alice"),
    )
    hold = await made.json()
    url = f"/v1/holds/{hold['hold_id']}"
    before = await (await client.get(url, headers=auth("alice"))).json()
    await problem(await client.get(url, headers=auth("bob")), 404, "hold_not_found")
    await problem(await client.delete(url, headers=auth("bob")), 404, "hold_not_found")
    await problem(
        await client.post(f"{url}/confirm", json=confirm_body(["1-1A"]), headers=auth("bob")),
        404,
        "hold_not_found",
    )
    after = await (await client.get(url, headers=auth("alice"))).json()
    assert after["status"] == "held"
    assert {k: v for k, v in after.items() if k != "ttl_s"} == {
        k: v for k, v in before.items() if k != "ttl_s"
    }
    # the seat is still held for alice, and she can still confirm it
    confirmed = await client.post(
        f"{url}/confirm", json=confirm_body(["1-1A"]), headers=auth("alice")
    )
    assert confirmed.status == 201


async def test_user_b_cannot_read_or_cancel_a_booking_of_user_a(client) -> None:  # type: ignore[no-untyped-def]
    booking = await book(client)
    url = f"/v1/bookings/{booking['booking_number']}"
    await problem(await client.get(url, headers=auth("bob")), 404, "booking_not_found")
    await problem(await client.post(f"{url}/cancel", headers=auth("bob")), 404, "booking_not_found")
    still = await (await client.get(url, headers=auth("alice"))).json()
    assert still == booking
    seatmap = await (
        await client.get(f"/v1/schedules/{booking['schedule_id']}/seatmap?from=CN&to=YK")
    ).json()
    assert any(
        s["seat"] == "1-1A" and s["state"] == "sold" for c in seatmap["coaches"] for s in c["seats"]
    )


async def test_a_confirmed_hold_redis_lost_is_still_shown_and_still_not_releasable(client) -> None:  # type: ignore[no-untyped-def]
    booking = await book(client)
    url = f"/v1/holds/{booking['hold_id']}"
    before = await (await client.get(url, headers=auth("alice"))).json()
    assert before["status"] == "confirmed"
    c = client.app[CTX]
    async for key in c.redis.scan_iter(match=f"{c.settings.key_prefix}:*", count=1000):
        await c.redis.delete(key)  # Redis lost its data (a restart without persistence)
    for headers in (auth("alice"), ADMIN_HEADERS):
        after = await client.get(url, headers=headers)
        assert after.status == 200, await after.text()
        assert await after.json() == before  # from the booking in Postgres
    await problem(await client.get(url, headers=auth("bob")), 404, "hold_not_found")
    await problem(await client.delete(url, headers=auth("alice")), 409, "hold_confirmed")
    await problem(await client.delete(url, headers=auth("bob")), 404, "hold_not_found")
