"""Fixtures for the HTTP API tests: a migrated private database, the real app on a test
server (``aiohttp_client``), tokens, and a small schedule factory."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from kai_inventory.api.auth import issue_token
from kai_inventory.app import create_app
from kai_inventory.localstack import free_port
from kai_inventory.settings import Settings

HOLD = "inventory:hold"
ADMIN = "inventory:admin"
READ = "inventory:read"
SECRET = "api-test-secret-0123456789abcdef-0123"

Client = TestClient  # type: ignore[type-arg]


@pytest.fixture(scope="session")
def api_dsn(migrated_dsn: str) -> str:
    """The session's private database, migrated once."""
    return migrated_dsn


@pytest.fixture
def api_settings(settings: Settings, api_dsn: str) -> Settings:
    return settings.replace(database_url=api_dsn, jwt_secret=SECRET, log_level="WARNING")


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]], api_settings: Settings
) -> Callable[..., Awaitable[Client]]:
    async def make(**overrides: Any) -> Client:
        return await aiohttp_client(create_app(api_settings.replace(**overrides)))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[Client]]) -> Client:
    return await make_client()


def token(sub: str, scope: str = HOLD, ttl: int = 3600, secret: str = SECRET) -> str:
    return issue_token(secret, sub, scope, ttl)


def auth(sub: str, scope: str = HOLD) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, scope)}"}


ADMIN_HEADERS = {"Authorization": f"Bearer {token('ops', ADMIN)}"}


def new_schedule_id() -> str:
    return "T" + secrets.token_hex(6)


def travel_date(days: int = 30) -> str:
    return (dt.date.today() + dt.timedelta(days=days)).isoformat()


def schedule_body(
    date: str | None = None,
    executive: list[str] | None = None,
    economy: list[str] | None = None,
    stations: tuple[str, ...] = ("GMR", "CN", "PWT", "YK"),
) -> dict[str, Any]:
    """A small train: car 1 executive (4 seats), car 2 economy (6 seats) unless told."""
    times = ["08:50", "11:40", "11:45", "13:00", "13:05", "15:10"]
    stops: list[dict[str, Any]] = []
    for i, code in enumerate(stations):
        stop: dict[str, Any] = {"station": code}
        if i > 0:
            stop["arrival"] = times[2 * i - 1]
        if i < len(stations) - 1:
            stop["departure"] = times[2 * i] if i < 3 else "15:00"
        stops.append(stop)
    return {
        "train": {"number": "7", "name": "Taksaka", "type": "express"},
        "departure_date": date or travel_date(),
        "stops": stops,
        "coaches": [
            {
                "car": 1,
                "class": "executive",
                "base_price": "450000",
                "seats": executive if executive is not None else ["1A", "1B", "1C", "1D"],
            },
            {
                "car": 2,
                "class": "economy",
                "base_price": "150000",
                "seats": economy if economy is not None else ["1A", "1B", "1C", "2A", "2B", "2C"],
            },
        ],
    }


async def create_schedule(client: Client, body: dict[str, Any] | None = None) -> str:
    schedule_id = new_schedule_id()
    response = await client.put(
        f"/v1/admin/schedules/{schedule_id}", json=body or schedule_body(), headers=ADMIN_HEADERS
    )
    assert response.status == 201, await response.text()
    return schedule_id


def class_hold(schedule_id: str, count: int = 1, seat_class: str = "economy") -> dict[str, Any]:
    """A hold body by class for the whole GMR -> YK journey of ``schedule_body``."""
    return {
        "schedule_id": schedule_id,
        "from": "GMR",
        "to": "YK",
        "class": seat_class,
        "count": count,
    }


def passengers_for(seats: list[str]) -> list[dict[str, str]]:
    return [
        {"name": f"Passenger {i}", "id_number": f"3174{i:012d}", "type": "adult", "seat": seat}
        for i, seat in enumerate(seats)
    ]


def confirm_body(seats: list[str], amount: str = "450000") -> dict[str, Any]:
    return {
        "passengers": passengers_for(seats),
        "payment": {"method": "qris", "reference": "PG-88121", "amount": amount},
    }


async def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is the problem+json ``code`` with ``status``; return its body."""
    text = await response.text()
    assert response.status == status, text
    assert response.headers["Content-Type"].startswith("application/problem+json"), text
    body = await response.json(content_type=None)
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"]
    assert body["title"]
    assert body["detail"]
    return body  # type: ignore[no-any-return]


# --- a real server in a subprocess (``kai-inventory serve``) -------------------------------


class ServerProcess:
    """``kai-inventory serve`` on a free port, with this test's Redis prefix and database."""

    def __init__(self, settings: Settings, workers: int = 1, **env: str) -> None:
        import os
        import subprocess
        import sys
        from pathlib import Path

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KAI_")}
        environment.update(
            {
                "REDIS_URL": settings.redis_url,
                "DATABASE_URL": settings.database_url,
                "KAI_KEY_PREFIX": settings.key_prefix,
                "KAI_JWT_SECRET": SECRET,
                "KAI_LOG_LEVEL": "WARNING",
                "KAI_DRAIN_S": "5",
                **env,
            }
        )
        script = Path(sys.executable).parent / "kai-inventory"
        self.proc = subprocess.Popen(
            [
                str(script),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.stderr()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready in time")

    def stop(self, timeout_s: float = 20.0) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stderr(self) -> str:
        if self.proc.stderr is None or self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-4000:]
