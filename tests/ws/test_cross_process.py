"""Delivery across server processes: two ``kai-inventory serve`` processes sharing Redis and
Postgres; a hold made through one is received by a WebSocket subscriber of the other."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from kai_inventory.localstack import free_port
from tests.ws.conftest import recv, subscribe

try:
    from kai_inventory.api.auth import issue_token
    from kai_inventory.persist.migrate import migrate_up
except ImportError as exc:
    pytest.skip(f"the full app is not importable yet: {exc}", allow_module_level=True)

SECRET = "test-secret-0123456789abcdef-procs"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def two_servers(redis_url: str, pg_dsn: str, key_prefix: str) -> AsyncIterator[list[str]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await migrate_up(conn)
    finally:
        await conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAI_")}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=pg_dsn,
        KAI_KEY_PREFIX=key_prefix,
        KAI_JWT_SECRET=SECRET,
        KAI_WS_COALESCE_MS="20",
        KAI_LOG_LEVEL="WARNING",
    )
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kai_inventory.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            for url, proc in zip(urls, procs, strict=True):
                while True:
                    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                    try:
                        async with session.get(url + "/healthz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    assert time.monotonic() < deadline, "server did not start"
                    await asyncio.sleep(0.1)
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_a_hold_made_through_one_process_reaches_a_subscriber_of_the_other(
    two_servers: list[str],
) -> None:
    one, two = two_servers
    admin = {"Authorization": "Bearer " + issue_token(SECRET, "ops", "inventory:admin", 600)}
    user = {"Authorization": "Bearer " + issue_token(SECRET, "bob", "inventory:hold", 600)}
    body = {
        "train": {"number": "42", "name": "Argo Lawu"},
        "departure_date": (dt.date.today() + dt.timedelta(days=5)).isoformat(),
        "stops": [
            {"station": "GMR", "departure": "08:00"},
            {"station": "CN", "arrival": "10:30", "departure": "10:35"},
            {"station": "SLO", "arrival": "15:00"},
        ],
        "coaches": [{"car": 1, "class": "executive", "seats": ["1A", "1B", "1C", "1D"]}],
    }
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{one}/v1/admin/schedules/XP-1", json=body, headers=admin) as r:
            assert r.status == 201, await r.text()
        async with session.ws_connect(f"{two}/v1/ws") as ws:
            sub, snap = await subscribe(ws, "XP-1", "GMR", "CN")
            hold = {"schedule_id": "XP-1", "from": "CN", "to": "SLO", "seats": ["1-1A"]}
            async with session.post(f"{one}/v1/holds", json=hold, headers=user) as r:
                assert r.status == 201, await r.text()
            hold["from"], hold["to"], hold["seats"] = "GMR", "SLO", ["1-1B"]
            async with session.post(f"{one}/v1/holds", json=hold, headers=user) as r:
                assert r.status == 201, await r.text()
            update = await recv(ws, timeout=5)
            assert update["type"] == "update"
            assert update["sub"] == sub["sub"]
            assert update["version"] > snap["version"]
            # CN -> SLO alone is not this journey: only 1-1B shows (possibly with 1-1A absent)
            assert update["seats"] == {"1-1B": "held"}
