"""Search, schedule, availability, seat map and the batch query."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import (
    auth,
    class_hold,
    create_schedule,
    problem,
    schedule_body,
    travel_date,
)


async def test_search_finds_the_schedule_with_times_and_classes(client) -> None:  # type: ignore[no-untyped-def]
    date = travel_date(40)
    schedule_id = await create_schedule(client, schedule_body(date=date))
    response = await client.get(f"/v1/schedules?from=CN&to=YK&date={date}")
    assert response.status == 200
    found = [s for s in (await response.json())["schedules"] if s["schedule_id"] == schedule_id]
    assert found == [
        {
            "schedule_id": schedule_id,
            "train": {"number": "7", "name": "Taksaka", "type": "express"},
            "status": "scheduled",
            "from": {"station": "CN", "departure": "11:45"},
            "to": {"station": "YK", "arrival": "15:10"},
            "classes": [
                {"class": "executive", "total": 4, "available": 4},
                {"class": "economy", "total": 6, "available": 6},
            ],
        }
    ]
    # the other direction and another date find nothing of ours
    for query in (f"from=YK&to=CN&date={date}", f"from=CN&to=YK&date={travel_date(41)}"):
        schedules = (await (await client.get(f"/v1/schedules?{query}")).json())["schedules"]
        assert schedule_id not in {s["schedule_id"] for s in schedules}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=GMR&to=YK", "date"),
        ("from=GMR&date=2026-12-20", "to"),
        ("from=GMR&to=YK&date=2026-13-01", "date"),
        ("from=GMR&to=YK&date=20261220", "date"),
        ("from=gmr&to=YK&date=2026-12-20", "from"),
        ("from=GMR&to=GMR&date=2026-12-20", "to"),
        ("from=GMR&to=YK&date=2026-12-20&limit=5", "limit"),
        ("from=GMR&from=CN&to=YK&date=2026-12-20", "from"),
    ],
)
async def test_search_query_is_validated(client, query: str, field: str) -> None:  # type: ignore[no-untyped-def]
    body = await problem(await client.get(f"/v1/schedules?{query}"), 422, "invalid_request")
    assert body["errors"][0]["field"] == field


async def test_get_schedule_is_the_definition_with_status(client) -> None:  # type: ignore[no-untyped-def]
    definition = schedule_body()
    schedule_id = await create_schedule(client, definition)
    body = await (await client.get(f"/v1/schedules/{schedule_id}")).json()
    assert body["schedule_id"] == schedule_id
    assert body["status"] == "scheduled"
    assert body["departure_date"] == definition["departure_date"]
    assert [s["station"] for s in body["stops"]] == ["GMR", "CN", "PWT", "YK"]
    assert [c["seats"] for c in body["coaches"]] == [c["seats"] for c in definition["coaches"]]


@pytest.mark.parametrize("schedule_id", ["NoSuchOne", "bad.id", "x" * 65])
async def test_unknown_schedule_reads_are_404(client, schedule_id: str) -> None:  # type: ignore[no-untyped-def]
    for suffix in ("", "/availability", "/seatmap"):
        await problem(
            await client.get(f"/v1/schedules/{schedule_id}{suffix}"), 404, "schedule_not_found"
        )


async def test_availability_defaults_to_the_whole_route_and_is_segment_aware(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    hold = await client.post(
        "/v1/holds",
        json={"schedule_id": schedule_id, "from": "GMR", "to": "CN", "seats": ["2-1A", "2-1B"]},
        headers=auth("alice"),
    )
    assert hold.status == 201
    whole = await (await client.get(f"/v1/schedules/{schedule_id}/availability")).json()
    assert (whole["from"], whole["to"]) == ("GMR", "YK")
    assert isinstance(whole["version"], int)
    assert whole["classes"] == [
        {"class": "executive", "total": 4, "available": 4},
        {"class": "economy", "total": 6, "available": 4},
    ]
    later = await (
        await client.get(f"/v1/schedules/{schedule_id}/availability?from=CN&to=YK")
    ).json()
    assert later["classes"][1] == {"class": "economy", "total": 6, "available": 6}
    assert later["version"] == whole["version"]


async def test_version_grows_with_every_change(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    url = f"/v1/schedules/{schedule_id}/availability"
    v1 = (await (await client.get(url)).json())["version"]
    hold = await client.post(
        "/v1/holds",
        json=class_hold(schedule_id),
        headers=auth("a"),
    )
    v2 = (await (await client.get(url)).json())["version"]
    await client.delete(f"/v1/holds/{(await hold.json())['hold_id']}", headers=auth("a"))
    v3 = (await (await client.get(url)).json())["version"]
    assert v1 < v2 < v3


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=YK&to=GMR", "to"),
        ("from=SGU", "from"),
        ("to=xx", "to"),
        ("from=CN&to=CN", "to"),
        ("foo=1", "foo"),
    ],
)
async def test_bad_journeys_on_reads_are_422(client, query: str, field: str) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    for suffix in ("availability", "seatmap"):
        body = await problem(
            await client.get(f"/v1/schedules/{schedule_id}/{suffix}?{query}"),
            422,
            "invalid_request",
        )
        assert body["errors"][0]["field"] == field


async def test_seatmap_groups_seats_by_coach_with_states(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    await client.post(
        "/v1/holds",
        json={"schedule_id": schedule_id, "from": "CN", "to": "PWT", "seats": ["2-1C"]},
        headers=auth("a"),
    )
    body = await (await client.get(f"/v1/schedules/{schedule_id}/seatmap?from=GMR&to=PWT")).json()
    assert (body["schedule_id"], body["from"], body["to"]) == (schedule_id, "GMR", "PWT")
    assert [(c["car"], c["class"]) for c in body["coaches"]] == [(1, "executive"), (2, "economy")]
    seats = {s["seat"]: s["state"] for c in body["coaches"] for s in c["seats"]}
    assert list(seats)[:4] == ["1-1A", "1-1B", "1-1C", "1-1D"]
    assert seats["2-1C"] == "held"
    assert sum(state == "free" for state in seats.values()) == 9
    after = await (await client.get(f"/v1/schedules/{schedule_id}/seatmap?from=PWT&to=YK")).json()
    assert all(s["state"] == "free" for c in after["coaches"] for s in c["seats"])


async def test_batch_query_answers_in_order_with_per_item_errors(client) -> None:  # type: ignore[no-untyped-def]
    first = await create_schedule(client)
    second = await create_schedule(client)
    queries: list[dict[str, Any]] = [
        {"schedule_id": first, "from": "GMR", "to": "YK"},
        {"schedule_id": "Missing1", "from": "GMR", "to": "YK"},
        {"schedule_id": second, "from": "CN", "to": "PWT"},
        {"schedule_id": first, "from": "YK", "to": "GMR"},
        {"schedule_id": first, "from": "CN", "to": "YK"},
    ]
    response = await client.post("/v1/availability/query", json={"queries": queries})
    assert response.status == 200, await response.text()
    results = (await response.json())["results"]
    assert [r["schedule_id"] for r in results] == [q["schedule_id"] for q in queries]
    assert results[0]["classes"][1] == {"class": "economy", "total": 6, "available": 6}
    assert (results[2]["from"], results[2]["to"]) == ("CN", "PWT")
    assert results[1]["error"]["code"] == "schedule_not_found"
    assert results[3]["error"]["code"] == "invalid_request"
    assert "version" in results[4]
    assert "error" not in results[4]


@pytest.mark.parametrize(
    "body",
    [
        {"queries": []},
        {"queries": [{"schedule_id": "S", "from": "GMR", "to": "YK"}] * 201},
        {"queries": [{"schedule_id": "S", "from": "GMR"}]},
        {"queries": [{"schedule_id": "bad id", "from": "GMR", "to": "YK"}]},
        {"queries": [], "extra": True},
        {},
    ],
)
async def test_batch_query_body_is_validated(client, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    await problem(await client.post("/v1/availability/query", json=body), 422, "invalid_request")


async def test_a_batch_query_nested_thousands_deep_is_400_not_500(client) -> None:  # type: ignore[no-untyped-def]
    body = b'{"queries": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = await client.post(
        "/v1/availability/query", data=body, headers={"Content-Type": "application/json"}
    )
    await problem(response, 400, "malformed_json")


async def test_batch_query_of_200_journeys_is_answered(client) -> None:  # type: ignore[no-untyped-def]
    ids = [await create_schedule(client) for _ in range(3)]
    stations = ["GMR", "CN", "PWT", "YK"]
    queries = [
        {"schedule_id": ids[i % 3], "from": stations[i % 3], "to": stations[3]} for i in range(200)
    ]
    response = await client.post("/v1/availability/query", json={"queries": queries})
    assert response.status == 200
    results = (await response.json())["results"]
    assert len(results) == 200
    assert all("classes" in r for r in results)


async def test_a_repeated_availability_read_sees_the_hold_made_in_between(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    url = f"/v1/schedules/{schedule_id}/availability?from=GMR&to=CN"
    before = [await (await client.get(url)).json() for _ in range(2)]
    assert before[0] == before[1]
    hold = await client.post(
        "/v1/holds",
        json={"schedule_id": schedule_id, "from": "GMR", "to": "CN", "seats": ["2-1A"]},
        headers=auth("alice"),
    )
    assert hold.status == 201
    after = await (await client.get(url)).json()
    assert after["version"] > before[0]["version"]
    economy = next(c for c in after["classes"] if c["class"] == "economy")
    assert economy["available"] == 5


async def test_a_repeated_seat_map_read_sees_the_hold_made_in_between(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    url = f"/v1/schedules/{schedule_id}/seatmap?from=GMR&to=CN"

    async def state_of(seat: str) -> str:
        body = await (await client.get(url)).json()
        seats = [s for coach in body["coaches"] for s in coach["seats"]]
        return next(s["state"] for s in seats if s["seat"] == seat)

    assert [await state_of("2-1A") for _ in range(2)] == ["free", "free"]
    hold = await client.post(
        "/v1/holds",
        json={"schedule_id": schedule_id, "from": "GMR", "to": "CN", "seats": ["2-1A"]},
        headers=auth("alice"),
    )
    assert hold.status == 201
    assert await state_of("2-1A") == "held"
