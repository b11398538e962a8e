"""Catalogue: PUT a schedule (201/200/409), change its status."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import (
    ADMIN_HEADERS,
    auth,
    class_hold,
    new_schedule_id,
    problem,
    schedule_body,
)


async def test_put_creates_then_same_body_is_unchanged_then_replace(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = new_schedule_id()
    url = f"/v1/admin/schedules/{schedule_id}"
    body = schedule_body()
    created = await client.put(url, json=body, headers=ADMIN_HEADERS)
    assert created.status == 201
    assert await created.json() == {"schedule_id": schedule_id, "result": "created"}
    assert created.headers["Location"] == f"/v1/schedules/{schedule_id}"
    same = await client.put(url, json=body, headers=ADMIN_HEADERS)
    assert same.status == 200
    assert (await same.json())["result"] == "unchanged"
    changed = schedule_body(economy=["1A", "1B"])
    replaced = await client.put(url, json=changed, headers=ADMIN_HEADERS)
    assert replaced.status == 200
    assert (await replaced.json())["result"] == "replaced"
    availability = await (await client.get(f"/v1/schedules/{schedule_id}/availability")).json()
    assert availability["classes"][1] == {"class": "economy", "total": 2, "available": 2}


async def test_put_that_changes_seats_under_a_live_hold_is_409(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = new_schedule_id()
    url = f"/v1/admin/schedules/{schedule_id}"
    assert (await client.put(url, json=schedule_body(), headers=ADMIN_HEADERS)).status == 201
    hold = await client.post(
        "/v1/holds",
        json={"schedule_id": schedule_id, "from": "GMR", "to": "YK", "seats": ["2-1A"]},
        headers=auth("alice"),
    )
    assert hold.status == 201
    response = await client.put(url, json=schedule_body(economy=["9A"]), headers=ADMIN_HEADERS)
    await problem(response, 409, "schedule_in_use")
    seatmap = await (await client.get(f"/v1/schedules/{schedule_id}/seatmap")).json()
    assert any(
        s["seat"] == "2-1A" and s["state"] == "held" for c in seatmap["coaches"] for s in c["seats"]
    )


def _with(**changes: Any) -> dict[str, Any]:
    body = schedule_body()
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_with(stops=[{"station": "GMR", "departure": "08:00"}]), "stops"),
        (_with(coaches=[]), "coaches"),
        (
            _with(
                stops=[
                    {"station": "GMR", "departure": "08:00"},
                    {"station": "GMR", "arrival": "09:00"},
                ]
            ),
            "stops[1].station",
        ),
        (
            _with(
                stops=[
                    {"station": "GMR", "departure": "10:00"},
                    {"station": "YK", "arrival": "09:00"},
                ]
            ),
            "stops[1].arrival",
        ),
        (
            _with(stops=[{"station": "GMR"}, {"station": "YK", "arrival": "09:00"}]),
            "stops[0].departure",
        ),
        (_with(departure_date="20-12-2026"), "departure_date"),
        (_with(train={"number": "7"}), "train.name"),
        (_with(colour="blue"), "colour"),
        (
            _with(coaches=[{"car": 1, "class": "economy", "seats": ["1A", "1A"]}]),
            "coaches[0].seats",
        ),
        (
            _with(
                coaches=[
                    {"car": 1, "class": "economy", "seats": ["1A"]},
                    {"car": 1, "class": "economy", "seats": ["2A"]},
                ]
            ),
            "coaches[1].car",
        ),
    ],
)
async def test_invalid_schedules_are_422(client, body: dict[str, Any], field: str) -> None:  # type: ignore[no-untyped-def]
    response = await client.put(
        f"/v1/admin/schedules/{new_schedule_id()}", json=body, headers=ADMIN_HEADERS
    )
    problem_body = await problem(response, 422, "invalid_request")
    assert field in {e["field"] for e in problem_body["errors"]}, problem_body


async def test_put_with_a_bad_schedule_id_is_422(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.put(
        "/v1/admin/schedules/bad.id", json=schedule_body(), headers=ADMIN_HEADERS
    )
    body = await problem(response, 422, "invalid_request")
    assert body["errors"][0]["field"] == "schedule_id"


async def test_status_change_is_shown_and_cancel_closes_the_sale(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = new_schedule_id()
    await client.put(
        f"/v1/admin/schedules/{schedule_id}", json=schedule_body(), headers=ADMIN_HEADERS
    )
    url = f"/v1/admin/schedules/{schedule_id}/status"
    delayed = await client.post(
        url,
        json={"status": "delayed", "delay_minutes": 15, "reason": "signal"},
        headers=ADMIN_HEADERS,
    )
    assert delayed.status == 200
    assert await delayed.json() == {
        "schedule_id": schedule_id,
        "status": "delayed",
        "delay_minutes": 15,
        "reason": "signal",
    }
    shown = await (await client.get(f"/v1/schedules/{schedule_id}")).json()
    assert (shown["status"], shown["delay_minutes"], shown["reason"]) == ("delayed", 15, "signal")
    hold = await client.post(
        "/v1/holds",
        json=class_hold(schedule_id),
        headers=auth("a"),
    )
    assert hold.status == 201  # delayed still sells
    assert (
        await client.post(url, json={"status": "cancelled"}, headers=ADMIN_HEADERS)
    ).status == 200
    response = await client.post(
        "/v1/holds",
        json=class_hold(schedule_id),
        headers=auth("b"),
    )
    await problem(response, 409, "sale_closed")


@pytest.mark.parametrize(
    "body",
    [
        {"status": "late"},
        {"status": "delayed", "delay_minutes": -1},
        {"status": "delayed", "extra": 1},
        {},
    ],
)
async def test_status_body_is_validated(client, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    schedule_id = new_schedule_id()
    await client.put(
        f"/v1/admin/schedules/{schedule_id}", json=schedule_body(), headers=ADMIN_HEADERS
    )
    response = await client.post(
        f"/v1/admin/schedules/{schedule_id}/status", json=body, headers=ADMIN_HEADERS
    )
    await problem(response, 422, "invalid_request")


async def test_status_of_an_unknown_schedule_is_404(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(
        f"/v1/admin/schedules/{new_schedule_id()}/status",
        json={"status": "cancelled"},
        headers=ADMIN_HEADERS,
    )
    await problem(response, 404, "schedule_not_found")
