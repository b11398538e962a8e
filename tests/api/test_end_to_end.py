"""A client's whole journey: search, availability, hold by class, confirm, booking, cancel."""

from __future__ import annotations

from tests.api.conftest import auth, confirm_body, create_schedule, schedule_body, travel_date


async def test_search_hold_confirm_cancel_brings_availability_back(client) -> None:  # type: ignore[no-untyped-def]
    date = travel_date(50)
    schedule_id = await create_schedule(client, schedule_body(date=date))
    user = auth("budi")

    search = await (await client.get(f"/v1/schedules?from=GMR&to=PWT&date={date}")).json()
    ours = next(s for s in search["schedules"] if s["schedule_id"] == schedule_id)
    start = ours["classes"]

    url = f"/v1/schedules/{schedule_id}/availability?from=GMR&to=PWT"
    before = await (await client.get(url)).json()
    assert before["classes"] == start

    hold = await client.post(
        "/v1/holds",
        json={
            "schedule_id": schedule_id,
            "from": "GMR",
            "to": "PWT",
            "class": "economy",
            "count": 2,
        },
        headers=user,
    )
    assert hold.status == 201
    held = await hold.json()
    during = await (await client.get(url)).json()
    assert during["classes"][1]["available"] == before["classes"][1]["available"] - 2

    confirmed = await client.post(
        f"/v1/holds/{held['hold_id']}/confirm",
        json=confirm_body(held["seats"], "300000"),
        headers=user,
    )
    assert confirmed.status == 201
    booking = await confirmed.json()
    shown = await (
        await client.get(f"/v1/bookings/{booking['booking_number']}", headers=user)
    ).json()
    assert shown["status"] == "confirmed"
    assert sorted(t["seat"] for t in shown["tickets"]) == sorted(held["seats"])
    sold = await (await client.get(url)).json()
    assert sold["classes"] == during["classes"]
    assert sold["version"] > before["version"]
    # the seats are sold on GMR..PWT only: PWT..YK still has them
    tail = await (
        await client.get(f"/v1/schedules/{schedule_id}/availability?from=PWT&to=YK")
    ).json()
    assert tail["classes"][1]["available"] == 6

    cancelled = await client.post(f"/v1/bookings/{booking['booking_number']}/cancel", headers=user)
    assert cancelled.status == 200
    assert (await cancelled.json())["status"] == "cancelled"
    after = await (await client.get(url)).json()
    assert after["classes"] == before["classes"]
    assert after["version"] > sold["version"]
