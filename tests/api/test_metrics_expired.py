"""/metrics exports kai_inventory_holds_expired_total, read at scrape time from the counter the
Redis servers' scripts keep (docs/OPERATIONS.md, "Monitoring").

The app runs on a private Redis here: the counter is per server and starts again whenever a
process loads the scripts' library, which other test runs on the shared Redis do at any time."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kai_inventory import localstack
from kai_inventory.context import CTX
from tests.api.conftest import auth, class_hold, create_schedule

EXPIRED = re.compile(r"^kai_inventory_holds_expired_total (\S+)$", re.MULTILINE)


@pytest.fixture
def private_redis_url() -> Iterator[str]:
    with localstack.private_redis() as server:
        yield server.url


def expired_total(text: str) -> float:
    found = EXPIRED.findall(text)
    assert len(found) == 1, text
    return float(found[0])


async def test_metrics_counts_a_hold_that_expired_and_was_reaped(
    make_client: Any, private_redis_url: str
) -> None:
    client = await make_client(redis_url=private_redis_url)
    assert (
        "# TYPE kai_inventory_holds_expired_total counter"
        in await (await client.get("/metrics")).text()
    )
    schedule_id = await create_schedule(client)
    before = expired_total(await (await client.get("/metrics")).text())
    assert before == 0  # a fresh Redis, the library just loaded
    response = await client.post(
        "/v1/holds", json={**class_hold(schedule_id), "ttl_s": 1}, headers=auth("alice")
    )
    assert response.status == 201, await response.text()
    released = await client.post("/v1/holds", json=class_hold(schedule_id), headers=auth("bob"))
    assert released.status == 201
    hold_id = (await released.json())["hold_id"]
    assert (await client.delete(f"/v1/holds/{hold_id}", headers=auth("bob"))).status == 200
    # the app's background reaper frees the expired hold within ~0.25 s of its expiry
    deadline = time.monotonic() + 5.0
    while True:
        text = await (await client.get("/metrics")).text()
        if expired_total(text) > before or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert "kai_inventory_holds_expired_total 1.0" in text  # the released hold is not counted
    assert "kai_inventory_holds_live 0.0" in text


async def test_metrics_answers_with_the_last_expired_total_when_redis_fails(
    make_client: Any, private_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(redis_url=private_redis_url)
    inventory = client.app[CTX].inventory

    async def seven() -> int:
        return 7

    async def failing() -> int:
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(inventory, "expired_total", seven)
    assert expired_total(await (await client.get("/metrics")).text()) == 7
    monkeypatch.setattr(inventory, "expired_total", failing)
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert expired_total(text) == 7  # the last value read, not a reset to 0
    assert "kai_inventory_holds_live 0.0" in text  # the other reads still happen
