"""Operations and the envelope: health, readiness, metrics, OpenAPI, request ids, framework
errors as problem+json, body limits, 500 and 503 answers, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from kai_inventory.api import registered_paths
from kai_inventory.context import CTX
from kai_inventory.localstack import free_port
from kai_inventory.logs import JsonFormatter
from tests.api.conftest import ADMIN_HEADERS, auth, class_hold, create_schedule, problem, token


async def test_healthz(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_when_everything_answers(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {
        "status": "ok",
        "checks": {"redis": "ok", "postgres": "ok", "scripts": "ok", "migrations": "ok"},
    }


async def test_readyz_reloads_scripts_that_redis_forgot(client) -> None:  # type: ignore[no-untyped-def]
    await client.app[CTX].redis.script_flush()
    assert (await client.get("/readyz")).status == 200


async def test_readyz_is_503_naming_the_failed_checks(client) -> None:  # type: ignore[no-untyped-def]
    await client.app[CTX].pool.close()
    response = await client.get("/readyz")
    assert response.status == 503
    assert response.content_type == "application/problem+json"  # as every error
    body = await response.json()
    assert body["code"] == "dependency_unavailable"
    assert body["status"] == 503
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["postgres"] != "ok"
    assert response.headers["Retry-After"]


async def test_metrics_exports_the_contract_names(client) -> None:  # type: ignore[no-untyped-def]
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert (
        'kai_inventory_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/healthz",status="200"}'
        in text
    )
    for name in (
        "kai_inventory_holds_live",
        "kai_inventory_confirm_duration_seconds",
        "kai_inventory_rate_limited_total",
    ):
        assert name in text


async def test_holds_live_gauge_counts_live_holds_at_scrape_time(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    for user in ("a", "b"):
        response = await client.post(
            "/v1/holds",
            json=class_hold(schedule_id),
            headers=auth(user),
        )
        assert response.status == 201
    text = await (await client.get("/metrics")).text()
    assert "kai_inventory_holds_live 2.0" in text


async def test_route_label_is_the_template_not_the_path(client) -> None:  # type: ignore[no-untyped-def]
    await client.get("/v1/schedules/SomeId/availability")
    await client.get("/v1/no/such/route")
    text = await (await client.get("/metrics")).text()
    assert 'route="/v1/schedules/{schedule_id}/availability"' in text
    assert "SomeId" not in text
    assert 'route="unmatched"' in text


async def test_openapi_describes_exactly_the_registered_routes(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    registered = {
        (path, method)
        for path, methods in registered_paths(client.app).items()
        for method in methods
    }
    assert described == registered
    schemas = document["components"]["schemas"]
    for name in (
        "HoldCreate",
        "HoldView",
        "Problem",
        "ScheduleDef",
        "ConfirmRequest",
        "BookingView",
    ):
        assert name in schemas
    hold = schemas["HoldCreate"]
    assert hold.get("additionalProperties") is False
    count = next(b for b in hold["properties"]["count"]["anyOf"] if b.get("type") == "integer")
    assert count["maximum"] == 4  # KAI_MAX_SEATS_PER_HOLD of the running service
    # every $ref resolves
    refs = {m for m in _refs(document)}
    assert refs <= {f"#/components/schemas/{n}" for n in schemas}


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


async def test_request_id_is_taken_or_generated_and_echoed(client) -> None:  # type: ignore[no-untyped-def]
    taken = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert taken.headers["X-Request-ID"] == "abc-123"
    generated = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert len(generated.headers["X-Request-ID"]) == 32
    failing = await client.get("/v1/holds/x.y", headers={"X-Request-ID": "rid-9"})
    assert failing.headers["X-Request-ID"] == "rid-9"
    assert (await failing.json())["request_id"] == "rid-9"


async def test_request_id_is_echoed_on_the_websocket_handshake_the_page_and_its_assets(
    client,  # type: ignore[no-untyped-def]
) -> None:
    for path, rid in (("/", "rid-page"), ("/static/app.js", "rid-asset")):
        served = await client.get(path, headers={"X-Request-ID": rid})
        assert served.status == 200
        assert served.headers["X-Request-ID"] == rid
    # the handshake's own headers (the client library keeps them private)
    url = client.make_url("/v1/ws")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"GET /v1/ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"X-Request-ID: rid-ws\r\n\r\n"
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode().lower()
    writer.close()
    assert head.startswith("http/1.1 101"), head
    assert "x-request-id: rid-ws\r\n" in head, head


async def test_unknown_route_and_wrong_method_are_problems(client) -> None:  # type: ignore[no-untyped-def]
    await problem(await client.get("/v1/nothing-here"), 404, "not_found")
    response = await client.patch("/v1/holds")
    await problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


async def test_body_over_64_kib_is_413_with_or_without_content_length(client) -> None:  # type: ignore[no-untyped-def]
    big = b'{"queries": [' + b" " * (64 * 1024) + b"]}"
    await problem(await client.post("/v1/availability/query", data=big), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    response = await client.put(
        "/v1/admin/schedules/S1",
        data=chunks(),
        headers={**ADMIN_HEADERS, "Content-Type": "application/json"},
    )
    await problem(response, 413, "payload_too_large")
    exactly = b'{"queries": []}' + b" " * (64 * 1024 - 15)
    assert len(exactly) == 64 * 1024
    await problem(await client.post("/v1/availability/query", data=exactly), 422, "invalid_request")


@pytest.mark.parametrize("body", [b"", b"{", b"queries", b'{"queries": [}'])
async def test_non_json_bodies_are_400_malformed_json(client, body: bytes) -> None:  # type: ignore[no-untyped-def]
    await problem(await client.post("/v1/availability/query", data=body), 400, "malformed_json")
    await problem(
        await client.post("/v1/holds", data=body, headers=auth("alice")), 400, "malformed_json"
    )


async def test_unexpected_exception_is_a_logged_500_with_the_request_id(
    client, monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    async def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(client.app[CTX].sales, "get_schedule", broken)
    with caplog.at_level(logging.ERROR, logger="kai_inventory.api"):
        response = await client.get("/v1/schedules/S1", headers={"X-Request-ID": "rid-500"})
    body = await problem(response, 500, "internal_error")
    assert body["request_id"] == "rid-500"
    assert "rid-500" in body["detail"]
    assert any("unhandled error" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_postgres_down_is_503_with_retry_after(client) -> None:  # type: ignore[no-untyped-def]
    await client.app[CTX].pool.close()
    response = await client.get("/v1/schedules?from=GMR&to=YK&date=2026-12-20")
    await problem(response, 503, "dependency_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", proc
    proc.kill()
    proc.wait()


async def test_redis_down_is_503_with_retry_after(make_client, private_redis) -> None:  # type: ignore[no-untyped-def]
    url, proc = private_redis
    client = await make_client(redis_url=url)
    schedule_id = await create_schedule(client)
    assert (await client.get(f"/v1/schedules/{schedule_id}/availability")).status == 200
    proc.kill()
    proc.wait()
    await asyncio.sleep(0.1)
    response = await client.post(
        "/v1/holds",
        json=class_hold(schedule_id),
        headers=auth("alice"),
    )
    await problem(response, 503, "dependency_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    response = await client.get(f"/v1/schedules/{schedule_id}/seatmap")
    await problem(response, 503, "dependency_unavailable")


async def test_logs_are_json_with_request_id_and_never_carry_tokens(client, caplog) -> None:  # type: ignore[no-untyped-def]
    secret_token = token("alice")
    with caplog.at_level(logging.INFO):
        await client.get(
            "/v1/holds/x.y",
            headers={"Authorization": f"Bearer {secret_token}", "X-Request-ID": "rid-log"},
        )
        await client.get(f"/v1/nothing?token={secret_token}")
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    assert lines
    assert all(secret_token not in line for line in lines)
    access = [json.loads(line) for line in lines if '"msg":"request"' in line]
    assert any(a.get("route") == "/v1/holds/{hold_id}" and a["status"] == 404 for a in access)


def test_formatter_masks_tokens_that_slip_into_a_message() -> None:
    record = logging.makeLogRecord(
        {"msg": "got %s", "args": (token("alice"),), "levelname": "INFO"}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "got <token>"
    assert line["level"] == "info"
