"""Many processes, one small schedule: no seat-leg is ever granted twice, and every leg adds up.

Two OS processes x 50 tasks hammer 2 cars x 4 seats x 6 stops with overlapping journeys. The
check uses the successful replies themselves: each grant occupies its seat-legs for sure from
the moment its reply arrived until the moment its release (or the booking's cancel) was sent.
Two such intervals on one seat-leg must never overlap (processes share the host's monotonic
clock). At the end Redis must show exactly the seat-legs that replies say are sold, none held.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
import traceback
from typing import Any

from kai_inventory.engine import views
from kai_inventory.engine.codes import Code
from kai_inventory.engine.connection import client_for_url
from kai_inventory.engine.inventory import HoldRequest, Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.engine.layout import Layout

PROCESSES = 2
TASKS = 50
ROUNDS = 60  # hold attempts per task; each success adds a release or confirm (+ cancel)
STOPS = ["A", "B", "C", "D", "E", "F"]
SCHEDULE = "CONC"

# (seat, leg, start, end) occupancy intervals for sure, in time.monotonic() seconds
Interval = tuple[int, int, float, float]


def conc_layout() -> Layout:
    far = int(time.time() * 1000) + 86_400_000
    coaches = [(1, "economy", ["1A", "1B", "1C", "1D"]), (2, "economy", ["2A", "2B", "2C", "2D"])]
    return Layout.build(SCHEDULE, STOPS, [far] * len(STOPS), coaches)


async def _worker(
    redis_url: str, prefix: str, seed: int
) -> tuple[int, list[Interval], list[tuple[int, int, int]]]:
    client: Any = client_for_url(redis_url, max_connections=64)
    inv = Inventory(client, Keys(prefix))
    await inv.load_scripts()
    layout = await inv.layout(SCHEDULE)
    assert layout is not None
    legs = layout.n_legs
    ops = 0
    intervals: list[Interval] = []
    sold_now: list[tuple[int, int, int]] = []  # seat-legs sold at the end, per replies

    async def task(t: int) -> None:
        nonlocal ops
        rng = random.Random(seed * 1000 + t)
        for _ in range(ROUNDS):
            a = rng.randrange(legs)
            b = rng.randrange(a + 1, legs + 1)
            user = f"u{seed}-{t}"
            if rng.random() < 0.5:
                seats = rng.sample(range(layout.n_seats), rng.randint(1, 2))
                req = HoldRequest(SCHEDULE, user, a, b, 600_000, seats=seats)
            else:
                req = HoldRequest(
                    SCHEDULE, user, a, b, 600_000, seat_class="economy", count=rng.randint(1, 2)
                )
            out = await inv.hold(req)
            granted = time.monotonic()
            ops += 1
            assert out.code in (Code.OK, Code.SEATS_UNAVAILABLE, Code.INSUFFICIENT_INVENTORY)
            if out.hold is None:
                continue
            hold = out.hold
            await asyncio.sleep(rng.random() * 0.002)
            if rng.random() < 0.5:
                ended = time.monotonic()
                code, _ = await inv.release(hold.hold_id, user)
                ops += 1
                assert code == Code.OK
            else:
                code, _ = await inv.confirm_begin(hold.hold_id, user)
                assert code == Code.OK
                assert await inv.confirm(hold.hold_id, f"BK{seed}{t}") == Code.OK
                ops += 2
                if rng.random() < 0.8:
                    await asyncio.sleep(rng.random() * 0.002)
                    ended = time.monotonic()
                    assert await inv.cancel(SCHEDULE, hold.a, hold.b, hold.seats) == Code.OK
                    ops += 1
                else:
                    ended = float("inf")
                    sold_now.extend((i, k, 0) for k in range(hold.a, hold.b) for i in hold.seats)
            intervals.extend(
                (i, k, granted, ended) for k in range(hold.a, hold.b) for i in hold.seats
            )

    await asyncio.gather(*(task(t) for t in range(TASKS)))
    await client.aclose()
    return ops, intervals, sold_now


def worker(redis_url: str, prefix: str, seed: int, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        results.put(("ok", asyncio.run(_worker(redis_url, prefix, seed))))
    except BaseException:
        results.put(("error", traceback.format_exc()))


async def test_two_processes_never_grant_a_seat_leg_twice(
    inventory_factory: Any, engine_url: str, key_prefix: str
) -> None:
    """On one Redis and on Redis Cluster."""
    redis_url = engine_url
    inv: Inventory = await inventory_factory(url=engine_url)
    layout = conc_layout()
    assert (await inv.open(layout)).created

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(redis_url, key_prefix, seed, barrier, results))
        for seed in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    loop = asyncio.get_running_loop()
    replies = [await loop.run_in_executor(None, results.get, True, 120) for _ in procs]
    errors = [detail for status, detail in replies if status == "error"]
    assert not errors, errors[0]
    collected = [detail for _, detail in replies]
    for p in procs:
        await loop.run_in_executor(None, p.join, 30)
        assert p.exitcode == 0

    total_ops = sum(ops for ops, _, _ in collected)
    assert total_ops >= 5000, total_ops

    by_seat_leg: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for _, intervals, _ in collected:
        for seat, leg, start, end in intervals:
            by_seat_leg.setdefault((seat, leg), []).append((start, end))
    assert len(by_seat_leg) == layout.n_seats * layout.n_legs  # every seat-leg was contended
    for key, spans in by_seat_leg.items():
        spans.sort()
        latest_end = float("-inf")
        for start, end in spans:
            assert start >= latest_end, f"seat-leg {key} granted twice: {start} < {latest_end}"
            latest_end = max(latest_end, end)

    snap = await inv.snapshot(SCHEDULE)
    assert snap is not None
    expected_sold = {(i, k) for _, _, sold in collected for i, k, _ in sold}
    for leg, (sold, held) in enumerate(views.leg_counts(layout, snap)):
        free = views.availability(layout, snap, leg, leg + 1)[0].available
        assert held == 0
        assert free + held + sold == layout.n_seats
        assert sold == sum(1 for _, k in expected_sold if k == leg)
    states = {
        (i, k): s
        for k in range(layout.n_legs)
        for i, s in enumerate(views.seat_states(layout, snap, k, k + 1))
    }
    assert {key for key, s in states.items() if s == "sold"} == expected_sold
