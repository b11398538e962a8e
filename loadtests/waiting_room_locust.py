"""Sale-opening load: many users join a sale's queue around ``opens_at`` and are admitted at a set
rate; reports time to admission, how late position updates arrive, and checks that no hold on
the sale's schedules succeeded without an admission.

Two drivers in this file:

* ``WaitingRoomUser`` (Locust): one user joins, watches its place over the WebSocket, then holds
  with its admission. Fine for a few thousand users across several Locust workers.
* ``main()`` (asyncio, the default when run as a script): 20,000 Locust users need far more
  than the 2 shared cores of a dev box, so the same scenario runs as one asyncio process:
  every user joins over HTTP within ``--window`` seconds around ``opens_at``; ``--watchers`` of
  them (a uniform sample) keep a WebSocket and report position frames and their admission; all
  users without an admission try a hold (must be 403), every admitted watcher holds with its
  token (201 or a seat refusal). By default it starts its own server (private database, random
  key prefix on the local Redis) with ``kai-inventory serve``; ``--base-url`` uses a running one
  (then ``KAI_JWT_SECRET`` must be that server's).

    .venv/bin/python loadtests/waiting_room_locust.py --users 20000 --rate 500 --window 10
    .venv/bin/locust -f loadtests/waiting_room_locust.py --host http://127.0.0.1:8080

How late position updates arrive: the driver samples the sale's ``popped`` counter (how many
were admitted so far) from Redis every 20 ms; a frame showing ``ahead = A`` for a user whose
place is ``base`` (read once from Redis) describes the moment ``popped`` reached ``base - A``;
its lateness is the receive time minus that moment (exact positions only, i.e. the last 100).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from kai_inventory.api.auth import issue_token
from kai_inventory.engine.keys import Keys, SaleKeys

PG_ADMIN = os.environ.get("KAI_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SCOPES = "inventory:read inventory:hold"


def _at(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat()


def schedule_body(seats: int = 800) -> dict[str, Any]:
    labels = [f"{r}{c}" for r in range(1, 201) for c in "ABCD"][:seats]
    per_car = 80
    coaches = [
        {
            "car": i + 1,
            "class": "economy",
            "base_price": "150000",
            "seats": labels[i * per_car : (i + 1) * per_car],
        }
        for i in range(len(labels) // per_car)
    ]
    date = (dt.date.today() + dt.timedelta(days=20)).isoformat()
    return {
        "train": {"number": "7", "name": "Taksaka", "type": "express"},
        "departure_date": date,
        "stops": [{"station": "GMR", "departure": "08:50"}, {"station": "YK", "arrival": "15:10"}],
        "coaches": coaches,
    }


@dataclass
class Stats:
    join_ms: list[float] = field(default_factory=list)
    to_admission_s: list[float] = field(default_factory=list)
    update_late_s: list[float] = field(default_factory=list)
    frame_gaps_s: list[float] = field(default_factory=list)
    frames: int = 0
    holds_with_admission: dict[int, int] = field(default_factory=dict)
    holds_without_admission: dict[int, int] = field(default_factory=dict)
    errors: int = 0


class PoppedTimeline:
    """(monotonic time, popped) samples of the sale's admission counter."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []

    def when(self, popped: int) -> float | None:
        for t, p in self.samples:
            if p >= popped:
                return t
        return None


async def _sample_popped(
    client: aioredis.Redis, key: str, line: PoppedTimeline, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        value = await client.hget(key, "popped")
        line.samples.append((time.monotonic(), int(value or 0)))
        await asyncio.sleep(0.02)


async def run_scenario(base: str, secret: str, prefix: str, args: argparse.Namespace) -> Stats:
    stats = Stats()
    admin = {"Authorization": "Bearer " + issue_token(secret, "ops", "inventory:admin", 3600)}
    connector = aiohttp.TCPConnector(limit=args.concurrency or args.watchers + 400)
    async with aiohttp.ClientSession(base, connector=connector) as http:
        schedule = "WR" + secrets.token_hex(4)
        async with http.put(
            f"/v1/admin/schedules/{schedule}", json=schedule_body(), headers=admin
        ) as r:
            assert r.status == 201, await r.text()
        sale = "lebaran" + secrets.token_hex(3)
        opens = time.time() + args.lead
        body = {
            "schedules": [schedule],
            "opens_at": _at(opens),
            "closes_at": _at(opens + 3600),
            "admit_per_s": args.rate,
            "max_admitted": args.users,
            "idle_s": 600,
            "admission_ttl_s": 900,
        }
        async with http.put(f"/v1/admin/sales/{sale}", json=body, headers=admin) as r:
            assert r.status == 201, await r.text()

        redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=32)
        )
        line = PoppedTimeline()
        stop = asyncio.Event()
        sampler = asyncio.create_task(
            _sample_popped(redis, SaleKeys.of(Keys(prefix), sale).cfg, line, stop)
        )
        users = [f"load{i}" for i in range(args.users)]
        watchers = set(random.sample(users, min(args.watchers, len(users))))
        start = opens - args.window / 2  # joins spread over [opens - w/2, opens + w/2]
        t0_mono = time.monotonic() - time.time()  # wall -> monotonic offset

        async def one(user: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.time()))
            headers = {"Authorization": "Bearer " + issue_token(secret, user, SCOPES, 3600)}
            sent = time.monotonic()
            try:
                if user in watchers:
                    await watch(user, headers, sent)
                else:
                    async with http.post(f"/v1/sales/{sale}/queue", headers=headers) as r:
                        await r.read()
                        stats.join_ms.append((time.monotonic() - sent) * 1000)
                    if random.random() < args.sneak:  # a hold without admission must be 403
                        hold = {
                            "schedule_id": schedule,
                            "from": "GMR",
                            "to": "YK",
                            "class": "economy",
                            "count": 1,
                        }
                        async with http.post("/v1/holds", json=hold, headers=headers) as r:
                            stats.holds_without_admission[r.status] = (
                                stats.holds_without_admission.get(r.status, 0) + 1
                            )
            except (aiohttp.ClientError, TimeoutError):
                stats.errors += 1

        async def watch(user: str, headers: dict[str, str], sent: float) -> None:
            token = headers["Authorization"].split()[1]
            async with http.ws_connect(f"/v1/ws?token={token}") as ws:
                await ws.send_json({"op": "queue", "sale_id": sale})
                base_of: int | None = None
                last = None
                async for msg in ws:
                    now = time.monotonic()
                    frame = json.loads(msg.data)
                    if frame["type"] == "queue":
                        stats.frames += 1
                        if last is not None:
                            stats.frame_gaps_s.append(now - last)
                        last = now
                        if base_of is None and time.time() > opens:
                            # redis-py types zrank for withscore=True too (a list); without
                            # it the answer is the rank or None
                            rank = cast(
                                "int | None",
                                await redis.zrank(SaleKeys.of(Keys(prefix), sale).queue, user),
                            )
                            popped = int(
                                await redis.hget(SaleKeys.of(Keys(prefix), sale).cfg, "popped") or 0
                            )
                            base_of = None if rank is None else rank + popped
                        if base_of is not None and frame["position"] <= 100:
                            at = line.when(base_of - frame["ahead"])
                            if at is not None:
                                stats.update_late_s.append(now - at)
                    elif frame["type"] == "admitted":
                        joined_wall = max(opens, sent - t0_mono)
                        stats.to_admission_s.append(now - (joined_wall + t0_mono))
                        hold = {
                            "schedule_id": schedule,
                            "from": "GMR",
                            "to": "YK",
                            "class": "economy",
                            "count": 1,
                        }
                        h = {**headers, "X-Admission-Token": frame["admission_token"]}
                        async with http.post("/v1/holds", json=hold, headers=h) as r:
                            stats.holds_with_admission[r.status] = (
                                stats.holds_with_admission.get(r.status, 0) + 1
                            )
                        return
                    else:
                        stats.errors += 1
                        return

        tasks = [one(u, start + args.window * i / len(users)) for i, u in enumerate(users)]
        await asyncio.wait_for(
            asyncio.gather(*tasks), timeout=args.lead + args.users / args.rate + 120
        )
        stop.set()
        await sampler
        await redis.aclose()
    return stats


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def report(stats: Stats, args: argparse.Namespace) -> dict[str, Any]:
    def summary(values: list[float]) -> dict[str, float]:
        return {
            "n": len(values),
            "p50": _pct(values, 0.5),
            "p95": _pct(values, 0.95),
            "p99": _pct(values, 0.99),
            "max": max(values, default=float("nan")),
        }

    out = {
        "users": args.users,
        "rate": args.rate,
        "window_s": args.window,
        "watchers": args.watchers,
        "join_latency_ms": summary(stats.join_ms),
        "time_to_admission_s": summary(stats.to_admission_s),
        "position_update_late_s": summary(stats.update_late_s),
        "position_frame_gap_s": summary(stats.frame_gaps_s),
        "position_frames": stats.frames,
        "holds_with_admission": stats.holds_with_admission,
        "holds_without_admission": stats.holds_without_admission,
        "errors": stats.errors,
        "ok": set(stats.holds_without_admission) <= {403} and stats.errors == 0,
    }
    if stats.frame_gaps_s:
        out["frames_closer_than_1s"] = sum(g < 0.95 for g in stats.frame_gaps_s)
    print(json.dumps(out, indent=2))
    return out


@contextlib.asynccontextmanager
async def own_server(port: int):  # type: ignore[no-untyped-def]
    """A private database and key prefix, and ``kai-inventory serve`` on ``port``."""
    name = f"kai_wrload_{os.getpid()}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = PG_ADMIN.rpartition("/")[0] + "/" + name
    prefix = "wrload" + secrets.token_hex(4)
    secret = secrets.token_hex(24)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KAI_")},
        "DATABASE_URL": dsn,
        "REDIS_URL": REDIS_URL,
        "KAI_KEY_PREFIX": prefix,
        "KAI_JWT_SECRET": secret,
        "KAI_MAX_ACTIVE_HOLDS_PER_USER": "0",
        "KAI_HOLD_RATE_PER_MIN": "0",
        "KAI_LOG_LEVEL": "WARNING",
    }
    exe = [sys.executable, "-m", "kai_inventory.cli"]
    subprocess.run([*exe, "migrate", "up"], env=env, check=True, capture_output=True)  # noqa: ASYNC221
    server = subprocess.Popen(  # noqa: ASYNC220
        [*exe, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(base + "/healthz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield base, secret, prefix
    finally:
        server.terminate()
        server.wait(timeout=15)
        client = aioredis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
        await client.aclose()
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    if args.base_url:
        secret = os.environ["KAI_JWT_SECRET"]
        prefix = os.environ.get("KAI_KEY_PREFIX", "kai")
        return report(await run_scenario(args.base_url, secret, prefix, args), args)
    async with own_server(args.port) as (base, secret, prefix):
        return report(await run_scenario(base, secret, prefix, args), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500, help="admit_per_s")
    parser.add_argument("--window", type=float, default=10.0, help="joins spread over this")
    parser.add_argument("--lead", type=float, default=8.0, help="opens_at this far ahead")
    parser.add_argument("--watchers", type=int, default=1000, help="users with a WebSocket")
    parser.add_argument(
        "--sneak",
        type=float,
        default=0.05,
        help="share of the others that try a hold without admission",
    )
    parser.add_argument("--concurrency", type=int, default=0, help="0: watchers + 400")
    parser.add_argument("--base-url")
    parser.add_argument("--port", type=int, default=18650)
    args = parser.parse_args()
    result = asyncio.run(amain(args))
    sys.exit(0 if result["ok"] else 1)


# ---- Locust -----------------------------------------------------------------------------------

if __name__ != "__main__":  # under Locust only: importing it monkey-patches (gevent) asyncio away
    from locust import HttpUser, between, task

    class WaitingRoomUser(HttpUser):
        """Set KAI_JWT_SECRET, WR_SALE and WR_SCHEDULE (a sale made beforehand by an operator)."""

        wait_time = between(1, 2)

        def on_start(self) -> None:
            self.user = "locust" + secrets.token_hex(6)
            secret = os.environ["KAI_JWT_SECRET"]
            self.headers = {
                "Authorization": "Bearer " + issue_token(secret, self.user, SCOPES, 3600)
            }
            self.sale = os.environ["WR_SALE"]
            self.schedule = os.environ["WR_SCHEDULE"]
            self.joined = time.monotonic()
            self.token: str | None = None
            self.client.post(
                f"/v1/sales/{self.sale}/queue", headers=self.headers, name="/v1/sales/[sale]/queue"
            )

        @task
        def poll_then_hold(self) -> None:
            hold = {
                "schedule_id": self.schedule,
                "from": "GMR",
                "to": "YK",
                "class": "economy",
                "count": 1,
            }
            if self.token is None:
                with self.client.post(
                    "/v1/holds",
                    json=hold,
                    headers=self.headers,
                    catch_response=True,
                    name="/v1/holds (no admission)",
                ) as r:
                    if r.status_code == 403:
                        r.success()
                    else:
                        r.failure(f"hold without admission answered {r.status_code}")
                r = self.client.get(
                    f"/v1/sales/{self.sale}/queue/me",
                    headers=self.headers,
                    name="/v1/sales/[sale]/queue/me",
                )
                if r.ok and r.json().get("status") == "admitted":
                    self.token = r.json()["admission_token"]
                    self.environment.events.request.fire(
                        request_type="QUEUE",
                        name="time to admission",
                        response_time=(time.monotonic() - self.joined) * 1000,
                        response_length=0,
                        exception=None,
                        context={},
                    )
                return
            h = {**self.headers, "X-Admission-Token": self.token}
            self.client.post("/v1/holds", json=hold, headers=h, name="/v1/holds (admitted)")
            self.stop()


if __name__ == "__main__":
    main()
