"""The fault stack: a PRIVATE redis-server (never the shared one: we kill it), a private
database (on the shared Postgres, or on a private ``PostgresServer`` for F5), optional fault
proxies on the Redis and Postgres links, and ``kai-inventory serve --workers 2`` in a
subprocess. ``CHAOS_LONG=1`` (``make chaos``) runs every fault longer with more clients.

Results of each fault run are appended to ``artifacts/faults/summary.jsonl``;
``python -m tests.faults.report`` renders them as the table in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from kai_inventory.api.auth import issue_token
from kai_inventory.localstack import PostgresServer, RedisServer, free_port
from kai_inventory.persist.migrate import migrate_up
from kai_inventory.settings import Settings
from tests.faults.invariants import check_all, check_watchers
from tests.faults.proxy import FaultProxy
from tests.faults.workload import ScheduleSpec, Workload, WsWatcher

SECRET = "fault-test-secret-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ROOT / "artifacts" / "faults" / "summary.jsonl"
LONG = os.environ.get("CHAOS_LONG", "") not in ("", "0")

# bounded form (make test) vs long form (make chaos)
WORKLOAD_S = 40.0 if LONG else 6.0
TASKS = 50 if LONG else 24
REPEATS = 3 if LONG else 1  # times each fault is injected into one run
STATIONS = ["GMR", "CN", "PWT", "KTA", "YK"]
EXECUTIVE = [f"{row}{col}" for row in (1, 2) for col in "ABCD"]
ECONOMY = [f"{row}{col}" for row in (1, 2, 3, 4) for col in "ABC"]


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, 'ops', 'inventory:admin', 3600)}"}


def schedule_body(date: str) -> dict[str, Any]:
    times = ["08:50", "10:00", "10:05", "11:00", "11:05", "12:00", "12:05", "13:00"]
    stops: list[dict[str, Any]] = []
    for i, code in enumerate(STATIONS):
        stop: dict[str, Any] = {"station": code}
        if i > 0:
            stop["arrival"] = times[2 * i - 1]
        if i < len(STATIONS) - 1:
            stop["departure"] = times[2 * i]
        stops.append(stop)
    return {
        "train": {"number": "7", "name": "Taksaka", "type": "express"},
        "departure_date": date,
        "stops": stops,
        "coaches": [
            {"car": 1, "class": "executive", "base_price": "450000", "seats": EXECUTIVE},
            {"car": 2, "class": "economy", "base_price": "150000", "seats": ECONOMY},
        ],
    }


class Service:
    """``kai-inventory serve --workers N`` on a fixed free port; restartable."""

    def __init__(self, env: dict[str, str], workdir: Path, workers: int = 2) -> None:
        self.env = env
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        script = Path(sys.executable).parent / "kai-inventory"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(script), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(self.workers)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"service not ready in time: {self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis: RedisServer | None = None
        self.pg_server: PostgresServer | None = None
        self.redis_proxy: FaultProxy | None = None
        self.pg_proxy: FaultProxy | None = None
        self.service: Service | None = None
        self.specs: list[ScheduleSpec] = []
        self.prefix = "f" + secrets.token_hex(5)
        self.database_url = ""
        self.admin_dsn = ""
        self.db_name = ""
        self.extra_env: dict[str, str] = {}

    # --- pieces -----------------------------------------------------------------------------

    def start_redis(self, appendonly: bool = True) -> None:
        self.redis = RedisServer(free_port(), self.workdir / "redis", appendonly=appendonly)
        self.redis.start()

    async def create_database(self, pg_admin_dsn: str, private_server: bool = False) -> None:
        if private_server:
            # a folder the postgres user can reach (pytest's tmp_path is private to root)
            pg_dir = Path(tempfile.mkdtemp(prefix="kai-fault-pg-"))
            pg_dir.chmod(0o755)
            self.pg_server = PostgresServer(free_port(), pg_dir)
            await asyncio.to_thread(self.pg_server.start)
            self.admin_dsn = self.pg_server.url("postgres")
        else:
            self.admin_dsn = pg_admin_dsn
        self.db_name = f"kai_fault_{os.getpid()}_{secrets.token_hex(3)}"
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            await admin.close()
        self.database_url = self.admin_dsn.rpartition("/")[0] + "/" + self.db_name
        conn = await asyncpg.connect(self.database_url)
        try:
            await migrate_up(conn)
        finally:
            await conn.close()

    def direct_settings(self) -> Settings:
        """Settings that reach the stores directly (not through the proxies): for checks."""
        assert self.redis is not None
        return Settings(
            redis_url=self.redis.url,
            database_url=self.database_url,
            key_prefix=self.prefix,
            jwt_secret=SECRET,
        )

    def service_env(self) -> dict[str, str]:
        assert self.redis is not None
        redis_url = self.redis.url
        if self.redis_proxy is not None:
            redis_url = f"redis://127.0.0.1:{self.redis_proxy.port}/0"
        database_url = self.database_url
        if self.pg_proxy is not None:
            head, _, tail = database_url.partition("@")
            database_url = f"{head}@127.0.0.1:{self.pg_proxy.port}/{tail.partition('/')[2]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAI_")}
        env.update(
            REDIS_URL=redis_url,
            DATABASE_URL=database_url,
            KAI_KEY_PREFIX=self.prefix,
            KAI_JWT_SECRET=SECRET,
            KAI_LOG_LEVEL="WARNING",
            KAI_DRAIN_S="2",
            KAI_HOLD_RATE_PER_MIN="0",
            KAI_RECONCILE_INTERVAL_S="1",
            KAI_WS_COALESCE_MS="20",
        )
        env.update(self.extra_env)
        return env

    def add_proxies(self, redis_link: bool = True, pg_link: bool = True) -> None:
        assert self.redis is not None
        if redis_link:
            self.redis_proxy = FaultProxy(self.redis.port).start()
        if pg_link:
            port = int(self.database_url.rpartition(":")[2].partition("/")[0])
            self.pg_proxy = FaultProxy(port).start()

    async def start_service(self) -> None:
        self.service = Service(self.service_env(), self.workdir)
        self.service.start()
        await asyncio.to_thread(self.service.wait_ready)

    async def restart_service(self) -> None:
        assert self.service is not None
        await asyncio.to_thread(self.service.stop)
        self.service.start()
        await asyncio.to_thread(self.service.wait_ready)

    async def create_schedules(self, count: int = 3) -> None:
        assert self.service is not None
        date = time.strftime("%Y-%m-%d", time.localtime(time.time() + 30 * 86400))
        seats = [f"1-{s}" for s in EXECUTIVE] + [f"2-{s}" for s in ECONOMY]
        async with aiohttp.ClientSession() as http:
            for _ in range(count):
                sid = "F" + secrets.token_hex(5)
                async with http.put(
                    f"{self.service.url}/v1/admin/schedules/{sid}",
                    json=schedule_body(date),
                    headers=_admin(),
                ) as response:
                    assert response.status == 201, await response.text()
                self.specs.append(ScheduleSpec(sid, STATIONS, seats, ["executive", "economy"]))

    def workload(self, seed: int = 1, **kw: Any) -> Workload:
        assert self.service is not None
        return Workload(self.service.url, self.specs, SECRET, tasks=TASKS, seed=seed, **kw)

    async def check(
        self, workloads: list[Workload], recover_timeout_s: float = 30.0
    ) -> dict[str, Any]:
        assert self.service is not None
        history = [r for w in workloads for r in w.history]
        expiring = [e for w in workloads for e in w.expiring]
        return await check_all(
            self.direct_settings(), self.service.url, self.specs, history, expiring,
            recover_timeout_s,
        )  # fmt: skip

    # --- teardown ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Tear everything down; then fail if the service did not exit cleanly: a worker that
        died during the test stops the whole unit with a non-zero code, which the answers alone
        may not show."""
        exit_code = None
        if self.service is not None:
            exit_code = await asyncio.to_thread(self.service.stop)
        for proxy in (self.redis_proxy, self.pg_proxy):
            if proxy is not None:
                proxy.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.db_name and self.admin_dsn:
            try:
                admin = await asyncpg.connect(self.admin_dsn, timeout=5)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                finally:
                    await admin.close()
            except (OSError, asyncpg.PostgresError):
                pass
        if self.pg_server is not None:
            await asyncio.to_thread(self.pg_server.stop, "fast")
            shutil.rmtree(self.pg_server.directory, ignore_errors=True)
        if exit_code not in (0, None):
            assert self.service is not None
            raise AssertionError(f"service exited {exit_code}: {self.service.tail()}")


@pytest.fixture
async def stack_factory(tmp_path: Path, pg_admin_dsn: str) -> AsyncIterator[Any]:
    """``await make(appendonly=True, proxies=False, private_pg=False, env={})``: a started
    stack with schedules, torn down after the test."""
    stacks: list[Stack] = []

    async def make(
        appendonly: bool = True,
        proxies: bool = False,
        private_pg: bool = False,
        env: dict[str, str] | None = None,
        schedules: int = 3,
    ) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}")
        stacks.append(stack)
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.extra_env = dict(env or {})
        await asyncio.to_thread(stack.start_redis, appendonly)
        await stack.create_database(pg_admin_dsn, private_server=private_pg)
        if proxies:
            stack.add_proxies()
        await stack.start_service()
        await stack.create_schedules(schedules)
        return stack

    yield make
    for stack in stacks:
        await stack.close()


def record_summary(
    fault: str, workloads: list[Workload], result: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """Append one row for docs/RELIABILITY.md to artifacts/faults/summary.jsonl."""
    operations = sum(len(w.history) for w in workloads)
    errors = sum(w.summary()["client_errors"] for w in workloads)
    row = {
        "fault": fault,
        "mode": "long" if LONG else "bounded",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "operations": operations,
        "client_errors": errors,
        "bookings": result.get("bookings", 0),
        "lost": result.get("lost", 0),
        "sold_twice": result.get("sold_twice", 0),
        "recover_s": result.get("recover_s", 0.0),
        "agree_s": result.get("agree_s", 0.0),
        "fault_s": result.get("fault_s"),
        **extra,
    }
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    with SUMMARY.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


async def run_fault(
    stack: Stack,
    fault: Callable[[], Awaitable[None]],
    *,
    at: float = 1.5,
    watchers: int = 0,
    resync: bool = False,
    monotonic: bool = True,
    seed: int = 1,
    duration: float = WORKLOAD_S,
) -> tuple[Workload, dict[str, Any]]:
    """Run the workload (and ``watchers`` WebSocket clients), inject ``fault`` ``at`` seconds
    in, let the workload finish, then check every invariant. ``resync``: the fault broke the
    pub/sub link (events were lost), so every WebSocket subscription that lived through it
    must get a snapshot after the fault began."""
    assert stack.service is not None
    w = stack.workload(seed)
    stop_ws = asyncio.Event()
    watcher = WsWatcher(stack.service.url, stack.specs, watchers) if watchers else None
    ws_task = asyncio.create_task(watcher.run(stop_ws)) if watcher else None
    duration = max(duration, WORKLOAD_S)
    task = asyncio.create_task(w.run(duration))
    await asyncio.sleep(at)
    started = ended = time.time()
    for k in range(REPEATS):  # the long form injects the fault again and again
        if k:
            await asyncio.sleep(max(0.5, (duration - at) / REPEATS - (ended - started)))
        started = time.time()
        await fault()
        ended = time.time()
    await task
    result = await stack.check([w])
    result["agree_s"] = result.pop("recover_s")
    ok_after = [
        r.t1 for r in w.history
        if r.t0 >= ended and r.op in ("hold", "confirm") and r.status in (200, 201)
    ]  # fmt: skip
    result["recover_s"] = round(min(ok_after) - ended, 2) if ok_after else None
    result["fault_s"] = round(ended - started, 2)
    try:
        if watcher is not None:
            result.update(
                await check_watchers(
                    watcher, stack.service.url, started if resync else None, monotonic=monotonic
                )
            )
    finally:
        stop_ws.set()
        if ws_task is not None:
            await ws_task
    return w, result
