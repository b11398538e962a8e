"""Degrade, never hang: a dead Redis answered 503 + Retry-After within 1 s (circuit breaker),
a dead Postgres leaves holds and reads working while confirms get 503."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.faults.conftest import SECRET, Stack
from tests.faults.workload import Record, Workload

# how long a dependency that is back may take to be used again: the breaker's cooldown and a
# new connection take about a second; the bound is generous for a loaded CI host
RECOVERY_S = 20.0


async def _burst(w: Workload, stack: Stack, n: int, confirm_hold: str | None) -> list[Record]:
    """n concurrent requests of every kind: holds, availability reads, a confirm."""
    spec = stack.specs[0]
    timeout = aiohttp.ClientTimeout(total=5)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(i: int) -> Record:
            user = f"degrade-{i}"
            kind = i % 3
            if kind == 0:
                body = {"schedule_id": spec.schedule_id, "from": spec.stations[0],
                        "to": spec.stations[1], "class": "economy", "count": 1}  # fmt: skip
                record = Record("hold", user, spec.schedule_id, 0, 0, None)
                return await w._call(session, "POST", "/v1/holds", record, json=body)
            if kind == 1 or confirm_hold is None:
                return await w._call(
                    session, "GET", f"/v1/schedules/{spec.schedule_id}/availability",
                    Record("read", user, spec.schedule_id, 0, 0, None),
                )  # fmt: skip
            return await w._call(
                session, "POST", f"/v1/holds/{confirm_hold}/confirm",
                Record("confirm", "degrade-owner", spec.schedule_id, 0, 0, None),
                json={"passengers": [{"name": "D", "id_number": "3174", "type": "adult",
                                      "seat": spec.seats[0]}],
                      "payment": {"method": "qris", "reference": "PG-d", "amount": "100"}},
            )  # fmt: skip

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _hold_for_confirm(w: Workload, stack: Stack) -> str:
    spec = stack.specs[0]
    async with aiohttp.ClientSession() as session:
        record = Record("hold", "degrade-owner", spec.schedule_id, 0, 0, None)
        r = await w._call(
            session, "POST", "/v1/holds", record,
            json={"schedule_id": spec.schedule_id, "from": spec.stations[0],
                  "to": spec.stations[-1], "seats": [spec.seats[0]], "ttl_s": 120},
        )  # fmt: skip
    assert r.status == 201, r.body
    return str(r.body["hold_id"])


async def test_dead_redis_is_answered_503_within_a_second_by_every_request(
    stack_factory: Any,
) -> None:
    stack: Stack = await stack_factory(proxies=True, schedules=1)
    assert stack.redis_proxy is not None
    assert stack.service is not None
    w = Workload(stack.service.url, stack.specs, SECRET)
    hold_id = await _hold_for_confirm(w, stack)
    stack.redis_proxy.set_mode("blackhole")  # Redis accepts and never answers
    answers: list[Record] = []
    waves: list[list[Record]] = []
    for _ in range(3):  # 3 waves over ~3 s: the breaker opens, probes, stays open
        waves.append(await _burst(w, stack, 30, hold_id))
        answers += waves[-1]
        await asyncio.sleep(0.5)
    slow = [(r.op, r.status, round(r.t1 - r.t0, 3)) for r in answers if r.t1 - r.t0 > 1.0]
    assert not slow, slow
    for r in answers:
        assert r.status == 503, (r.op, r.status, r.body)
        assert r.body["code"] == "dependency_unavailable"
        assert r.retry_after is not None
        assert int(r.retry_after) >= 1
    # once the first wave has opened the breaker, it (not each request's own timeout) answers
    # most requests; the slow ones share a probe (one auto-pipelined batch) per worker
    later = waves[1] + waves[2]
    fast = sum(1 for r in later if r.t1 - r.t0 < 0.2)
    assert fast >= len(later) // 2, sorted(round(r.t1 - r.t0, 3) for r in later)
    stack.redis_proxy.set_mode("pass")
    deadline = time.monotonic() + RECOVERY_S
    while True:
        again = await _burst(w, stack, 3, None)
        if all(r.status is not None and r.status < 500 for r in again):  # answered again
            break
        assert time.monotonic() < deadline, [(r.op, r.status) for r in again]
        await asyncio.sleep(0.3)


async def test_dead_postgres_keeps_holds_and_reads_and_refuses_confirms(
    stack_factory: Any,
) -> None:
    stack: Stack = await stack_factory(proxies=True, schedules=1)
    assert stack.pg_proxy is not None
    assert stack.service is not None
    w = Workload(stack.service.url, stack.specs, SECRET)
    hold_id = await _hold_for_confirm(w, stack)
    stack.pg_proxy.set_mode("reset")  # Postgres unreachable: every connection reset
    answers = await _burst(w, stack, 30, hold_id)
    by_op: dict[str, set[int | None]] = {}
    for r in answers:
        by_op.setdefault(r.op, set()).add(r.status)
        assert r.t1 - r.t0 < 5.0, (r.op, r.status, r.t1 - r.t0)
    assert by_op["hold"] <= {201, 409}, by_op
    assert 201 in by_op["hold"], by_op
    assert by_op["read"] == {200}, by_op
    assert by_op["confirm"] == {503}, by_op
    assert all(r.retry_after for r in answers if r.status == 503)
    # back: the same hold confirms (it stayed held through the outage)
    stack.pg_proxy.set_mode("pass")
    deadline = time.monotonic() + RECOVERY_S
    tries: list[tuple[int | None, str | None, float]] = []
    while True:
        again = [r for r in await _burst(w, stack, 3, hold_id) if r.op == "confirm"]
        tries += [(r.status, r.error, round(r.t1 - r.t0, 3)) for r in again]
        if again and again[0].status in (200, 201):
            break
        assert time.monotonic() < deadline, (tries, stack.service.alive(), stack.service.tail())
        await asyncio.sleep(0.3)
