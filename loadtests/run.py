"""Run the Locust scenarios headless against a private server, then check the thresholds.

    python loadtests/run.py --profile smoke        # 20-30 s, what `make test` runs
    python loadtests/run.py --profile loadtest     # `make loadtest`: longer, more users
    python loadtests/run.py --host http://host:8080 --database-url ...   # an existing server

Without ``--host`` it starts its own ``kai-inventory serve`` on a free port with a random
``KAI_KEY_PREFIX`` and a private Postgres database it creates and migrates, and afterwards
stops the server, deletes its Redis keys and drops the database, whatever happened.
Reports (Locust CSV + HTML, the run summary, the server log) go to ``loadtests/reports/``.
Exit status: 0 when every threshold holds, 1 when one is missed, 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import checks  # noqa: E402
from kaiload import run_id, wait_ready  # noqa: E402

from kai_inventory.localstack import free_port  # noqa: E402

BIN = Path(sys.executable).parent
PROFILES = {
    # users at the peak, seconds of load
    "smoke": {"users": 24, "duration": 20},
    "loadtest": {"users": 60, "duration": 60},
}


def _admin_dsn() -> str:
    return os.environ.get("KAI_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _with_database(dsn: str, database: str) -> str:
    head, _, _ = dsn.rpartition("/")
    return f"{head}/{database}"


def _pg(statement: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(_admin_dsn(), timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def delete_redis_keys(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


@dataclass
class Server:
    base_url: str
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def server_env(run: str, database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ours minus KAI_* (so no stray setting leaks in), plus its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAI_", "KAILT_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "KAI_KEY_PREFIX": run,
            "KAI_JWT_SECRET": os.environ.get("KAI_JWT_SECRET") or secrets.token_hex(24),
            "KAI_MAX_ACTIVE_HOLDS_PER_USER": "0",
            "KAI_HOLD_RATE_PER_MIN": "0",
            "KAI_LOG_LEVEL": "WARNING",
            "KAI_DRAIN_S": "1",
        }
    )
    env.update(extra or {})
    return env


@contextlib.contextmanager
def private_database(run: str) -> Iterator[str]:
    name = f"kai_{run}"
    _pg(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(_admin_dsn(), name)
    finally:
        with contextlib.suppress(Exception):
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group (its workers too), SIGKILL after the grace period."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@contextlib.contextmanager
def local_server(
    run: str,
    reports: Path,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    database_url: str | None = None,
    keep_keys: bool = False,
) -> Iterator[Server]:
    """A ``kai-inventory serve`` of our own: private database, key prefix ``run``; all cleaned.

    With ``database_url`` the caller owns the database; ``keep_keys`` leaves the Redis keys
    (a second server on the same data, as the benchmark does).
    """
    with contextlib.ExitStack() as stack:
        dsn = database_url or stack.enter_context(private_database(run))
        env = server_env(run, dsn, extra_env)
        migrate = subprocess.run(
            [str(BIN / "kai-inventory"), "migrate", "up"],
            env=env,
            capture_output=True,
            timeout=120,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate up failed: {migrate.stderr.decode()[-2000:]}")
        port = free_port()
        log_path = reports / f"server-{run}.log"
        log = stack.enter_context(open(log_path, "wb"))
        process = subprocess.Popen(
            [
                str(BIN / "kai-inventory"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        redis_url = env["REDIS_URL"]
        if not keep_keys:
            stack.callback(lambda: delete_redis_keys(redis_url, run))
        stack.callback(stop_process, process)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base_url, timeout_s=45)
        except TimeoutError:
            tail = log_path.read_bytes()[-3000:].decode(errors="replace")
            raise RuntimeError(f"server did not become ready; log tail:\n{tail}") from None
        yield Server(base_url, dsn, process, log_path)


def run_locust(
    base_url: str, run: str, profile: str, users: int, duration: float, reports: Path, secret: str
) -> tuple[str, Path]:
    csv_prefix = str(reports / profile)
    summary = reports / f"{profile}-summary.json"
    summary.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAILT_")}
    env.update(
        {
            "KAILT_RUN": run,
            "KAILT_PEAK_USERS": str(users),
            "KAILT_DURATION_S": str(duration),
            "KAILT_SUMMARY": str(summary),
            "KAI_JWT_SECRET": secret,
        }
    )
    cmd = [
        str(BIN / "locust"),
        "-f",
        str(HERE / "locustfile.py"),
        "--headless",
        "--host",
        base_url,
        "--csv",
        csv_prefix,
        "--html",
        str(reports / f"{profile}.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "5",
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=str(HERE), timeout=duration + 90)
    print(f"locust: exit {proc.returncode} after {time.monotonic() - started:.1f}s")
    if not summary.exists():
        raise RuntimeError("locust wrote no run summary (did the test start? see its output)")
    return csv_prefix, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="headless Locust run + thresholds")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--host", default=None, help="an existing server (no private one)")
    parser.add_argument("--database-url", default=None, help="that server's database, if any")
    parser.add_argument("--reports", default=str(HERE / "reports"))
    args = parser.parse_args(argv)

    profile = PROFILES[args.profile]
    users = args.users or int(profile["users"])
    duration = args.duration or float(profile["duration"])
    reports = Path(args.reports)
    reports.mkdir(parents=True, exist_ok=True)
    run = run_id()
    started = time.monotonic()
    print(f"loadtest: run {run}, profile {args.profile}, {users} users, {duration:.0f}s")
    try:
        with contextlib.ExitStack() as stack:
            secret = os.environ.get("KAI_JWT_SECRET") or secrets.token_hex(24)
            if args.host:
                base_url, dsn = args.host.rstrip("/"), args.database_url
                if "KAI_JWT_SECRET" not in os.environ:
                    print("loadtest: set KAI_JWT_SECRET to the server's", file=sys.stderr)
                    return 2
            else:
                server = stack.enter_context(
                    local_server(run, reports, args.workers, {"KAI_JWT_SECRET": secret})
                )
                base_url, dsn = server.base_url, server.database_url
            print(f"loadtest: server {base_url} ready after {time.monotonic() - started:.1f}s")
            csv_prefix, summary = run_locust(
                base_url, run, args.profile, users, duration, reports, secret
            )
            code = checks.main(
                [
                    "--csv",
                    csv_prefix,
                    "--summary",
                    str(summary),
                    "--profile",
                    args.profile,
                    "--base-url",
                    base_url,
                    *(["--database-url", dsn] if dsn else []),
                ]
            )
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"loadtest: could not run: {exc}", file=sys.stderr)
        return 2
    print(f"loadtest: done in {time.monotonic() - started:.1f}s; reports in {reports}")
    return code


if __name__ == "__main__":
    sys.exit(main())
