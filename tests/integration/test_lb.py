"""Several instances: two ``kai-inventory serve`` processes behind HAProxy (deploy/lb/haproxy.cfg,
round robin, no stickiness), on one Redis and on a 3-master Redis Cluster (same test bodies).

Holds raced through the load balancer never oversell, whichever instance answers; a WebSocket
subscriber (connected through the load balancer) sees the holds made through the other
instance.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from kai_inventory.localstack import free_port
from kai_inventory.settings import Settings
from tests.api.conftest import ADMIN_HEADERS, ServerProcess, auth, new_schedule_id, schedule_body
from tests.ws.conftest import recv, subscribe

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "lb" / "haproxy.cfg"


def _haproxy() -> str:
    found = shutil.which("haproxy")
    if found:
        return found
    out = subprocess.run(
        [str(ROOT / "scripts" / "ensure-lb.sh")], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"scripts/ensure-lb.sh failed: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Stack:
    lb: str  # http://127.0.0.1:<port> of HAProxy
    instances: dict[str, str]  # HAProxy server name -> the instance's own URL


def _wait_lb(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Until HAProxy has both instances in rotation (both names seen in X-Served-By)."""
    import urllib.error
    import urllib.request

    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310
                seen.add(response.headers.get("X-Served-By", ""))
        except (urllib.error.URLError, OSError):
            pass
        if {"app1", "app2"} <= seen:
            return
        time.sleep(0.1)
    raise RuntimeError(f"load balancer not ready: saw {seen}")


@pytest.fixture(scope="module", params=["single", "cluster"])
def stack(request: pytest.FixtureRequest, redis_url: str, migrated_dsn: str) -> Iterator[Stack]:
    url = redis_url
    if request.param == "cluster":
        url = str(request.getfixturevalue("redis_cluster").url)
    prefix = "t" + secrets.token_hex(6)
    settings = Settings().replace(redis_url=url, database_url=migrated_dsn, key_prefix=prefix)
    servers = [ServerProcess(settings, KAI_WS_COALESCE_MS="20") for _ in range(2)]
    lb_port = free_port()
    env = {
        **os.environ,
        "KAI_LB_BIND": f"127.0.0.1:{lb_port}",
        "KAI_APP1": f"127.0.0.1:{servers[0].port}",
        "KAI_APP2": f"127.0.0.1:{servers[1].port}",
    }
    lb = None
    try:
        for server in servers:
            server.wait_ready()
        lb = subprocess.Popen(
            [_haproxy(), "-db", "-f", str(CONFIG)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_lb(f"http://127.0.0.1:{lb_port}", lb)
        yield Stack(
            lb=f"http://127.0.0.1:{lb_port}",
            instances={"app1": servers[0].url, "app2": servers[1].url},
        )
    finally:
        if lb is not None:
            lb.send_signal(signal.SIGTERM)
            try:
                lb.wait(10)
            except subprocess.TimeoutExpired:
                lb.kill()
        for server in servers:
            server.stop()
        if request.param == "single":
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
            client.close()


async def _put_schedule(session: aiohttp.ClientSession, base: str, economy: list[str]) -> str:
    schedule_id = new_schedule_id()
    response = await session.put(
        f"{base}/v1/admin/schedules/{schedule_id}",
        json=schedule_body(economy=economy),
        headers=ADMIN_HEADERS,
    )
    assert response.status == 201, await response.text()
    return schedule_id


async def test_holds_raced_through_the_balancer_never_oversell(stack: Stack) -> None:
    economy = ["1A", "1B", "1C"]
    async with aiohttp.ClientSession() as admin:
        schedule_id = await _put_schedule(admin, stack.lb, economy)

    start = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # one connection per client
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(i: int) -> tuple[int, str, dict[str, Any]]:
            await start.wait()
            async with session.post(
                f"{stack.lb}/v1/holds",
                json={
                    "schedule_id": schedule_id,
                    "from": "GMR",
                    "to": "YK",
                    "class": "economy",
                    "count": 1,
                },
                headers=auth(f"lb-racer-{i}"),
            ) as response:
                body = await response.json(content_type=None)
                return response.status, response.headers.get("X-Served-By", ""), body

        tasks = [asyncio.create_task(client(i)) for i in range(60)]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)

    statuses = collections.Counter(status for status, _, _ in results)
    assert statuses == {201: 3, 409: 57}, statuses
    assert {served for _, served, _ in results} == {"app1", "app2"}  # both instances answered
    won = sorted(seat for status, _, body in results if status == 201 for seat in body["seats"])
    assert won == ["2-1A", "2-1B", "2-1C"]
    # every instance reads the same inventory
    for base in stack.instances.values():
        async with aiohttp.ClientSession() as reader:
            response = await reader.get(f"{base}/v1/schedules/{schedule_id}/availability")
            availability = await response.json()
        assert availability["classes"][1] == {"class": "economy", "total": 3, "available": 0}


async def test_a_subscriber_sees_holds_made_through_the_other_instance(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        schedule_id = await _put_schedule(session, stack.lb, ["1A", "1B", "1C", "2A"])
        async with session.ws_connect(f"{stack.lb}/v1/ws") as ws:  # upgraded through HAProxy
            served = ws._response.headers.get("X-Served-By", "")
            assert served in stack.instances
            other = next(url for name, url in stack.instances.items() if name != served)
            sub, snap = await subscribe(ws, schedule_id, "GMR", "YK")
            hold = {"schedule_id": schedule_id, "from": "CN", "to": "YK", "seats": ["2-2A"]}
            response = await session.post(f"{other}/v1/holds", json=hold, headers=auth("wsu"))
            assert response.status == 201, await response.text()
            update = await recv(ws, timeout=10)
            assert update["type"] == "update"
            assert update["sub"] == sub["sub"]
            assert update["version"] > snap["version"]
            assert update["seats"] == {"2-2A": "held"}
