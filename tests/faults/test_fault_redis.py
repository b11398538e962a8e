"""F1-F4: the private redis-server killed, emptied, rolled back and paused under a workload."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.conftest import Stack, record_summary, run_fault


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no-aof"])
async def test_f1_redis_sigkill_and_restart_loses_no_sale(
    stack_factory: Any, appendonly: bool
) -> None:
    stack: Stack = await stack_factory(appendonly=appendonly)
    assert stack.redis is not None
    redis = stack.redis

    async def kill_and_restart() -> None:
        redis.stop(signal.SIGKILL)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(redis.start)

    w, result = await run_fault(stack, kill_and_restart, watchers=3, resync=True)
    record_summary(f"F1 redis SIGKILL + restart ({'AOF' if appendonly else 'no AOF'})", [w], result)


async def test_f2_redis_comes_back_empty_and_is_rebuilt(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(appendonly=True)
    assert stack.redis is not None
    redis = stack.redis

    async def failover_to_empty() -> None:
        redis.stop(signal.SIGKILL)
        shutil.rmtree(redis.directory / "appendonlydir", ignore_errors=True)
        await asyncio.to_thread(redis.start)

    w, result = await run_fault(stack, failover_to_empty, watchers=3, resync=True)
    record_summary("F2 Redis comes back empty", [w], result)
    # the operator's command agrees: exit 0 when Redis equals Postgres
    env = {k: v for k, v in stack.service_env().items()}
    env.update(REDIS_URL=redis.url, DATABASE_URL=stack.database_url)
    verify = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "kai-inventory"), "verify"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "0 disagree" in verify.stdout


async def test_f3_redis_restarted_from_an_older_aof(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(appendonly=True)
    assert stack.redis is not None
    redis = stack.redis
    aof = redis.directory / "appendonlydir"
    old = redis.directory / "aof-copy"

    async def roll_back() -> None:
        shutil.rmtree(old, ignore_errors=True)
        shutil.copytree(aof, old)  # the state now ...
        await asyncio.sleep(2.0)  # ... sales go on, Postgres moves ahead ...
        redis.stop(signal.SIGKILL)
        shutil.rmtree(aof)
        shutil.copytree(old, aof)  # ... and Redis comes back with the older state
        await asyncio.to_thread(redis.start)

    # versions may go back after a rollback (pinned below); everything else must hold
    w, result = await run_fault(stack, roll_back, watchers=3, resync=True, monotonic=False)
    record_summary("F3 Redis restarted from an older AOF", [w], result)


async def test_f3_versions_never_go_back_after_redis_rolls_back(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(appendonly=True, schedules=1)
    assert stack.redis is not None
    assert stack.service is not None
    redis = stack.redis
    spec = stack.specs[0]
    w = stack.workload(seed=3)
    w.schedules = [spec]
    w.tasks = 4
    await w.run(0.8)
    await asyncio.sleep(1.2)  # appendfsync everysec: the state so far is on disk
    shutil.copytree(redis.directory / "appendonlydir", redis.directory / "aof-copy")
    await w.run(1.5)  # more changes: the version moves on
    url = f"{stack.service.url}/v1/schedules/{spec.schedule_id}/availability"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            before = (await response.json())["version"]
        redis.stop(signal.SIGKILL)
        shutil.rmtree(redis.directory / "appendonlydir")
        shutil.copytree(redis.directory / "aof-copy", redis.directory / "appendonlydir")
        await asyncio.to_thread(redis.start)
        await asyncio.sleep(2.5)  # the service notices and recovers (epoch, reconcile)
        async with http.get(url) as response:
            after = (await response.json())["version"]
    assert after >= before, f"version went back from {before} to {after}"


async def test_f4_redis_paused_3s_then_resumed(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(appendonly=True)
    assert stack.redis is not None
    assert stack.redis.proc is not None
    pid = stack.redis.proc.pid

    async def pause() -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)
        finally:
            os.kill(pid, signal.SIGCONT)

    w, result = await run_fault(stack, pause, watchers=3)
    # degrade, never hang: while Redis was stopped every request was still answered quickly
    slow = [r for r in w.history if r.t1 - r.t0 > 2.0]
    assert not slow, [(r.op, r.status, round(r.t1 - r.t0, 2)) for r in slow[:5]]
    record_summary("F4 Redis SIGSTOP 3 s", [w], result)
