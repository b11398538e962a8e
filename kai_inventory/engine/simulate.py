"""Allocation quality: best fit vs first fit on the same seeded stream of requests.

``python -m kai_inventory.engine.simulate [--seed N] [--requests N] [--demand uniform|phased]
[--redis-url URL]``

A 10-stop, 500-seat schedule (10 economy cars of 50) receives a stream of random
origin-destination requests of 1..2 seats of the class; each granted hold is confirmed at once.
Demand ``uniform``: journeys uniform over the (a, b) pairs. Demand ``phased``: the sale's first
70% of requests are short journeys (1-3 legs), the rest long ones (5 legs or more): the order in
which segment-aware choice is meant to pay (docs/ENGINE.md, "Allocation comparison").
The same stream is replayed for each strategy on its own schedule, under a random key prefix on
a real Redis (cleaned up afterwards). Reported per strategy:

- journeys sold: requests granted;
- seat-legs sold: sum over granted requests of seats x legs;
- stranded seat-legs: seat-legs still free at the end that no rejected request could have used
  (a rejected request for journey [a, b) could use seat-leg (i, k) when a <= k < b and seat i
  is free on every leg of [a, b)). Free capacity that unmet demand could not fit is waste
  caused by fragmentation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import time

import msgspec
import redis.asyncio as aioredis

from kai_inventory.engine import views
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import HoldRequest, Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.engine.layout import Layout

STOPS = ["S0", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9"]
CARS = 10
SEATS_PER_CAR = 50


class StrategyResult(msgspec.Struct, frozen=True):
    strategy: str
    requests: int
    journeys_sold: int
    seat_legs_sold: int
    seat_legs_free: int
    stranded_seat_legs: int
    capacity_seat_legs: int


def make_phased_stream(seed: int, count: int, legs: int) -> list[tuple[int, int, int]]:
    """Short journeys (1-3 legs) for the first 70% of requests, then long ones (5+ legs)."""
    rng = random.Random(seed)  # nosec B311 (a seeded replay, not security)
    short = count * 7 // 10
    out = []
    for n in range(count):
        length = rng.randint(1, 3) if n < short else rng.randint(min(5, legs), legs)
        a = rng.randrange(legs - length + 1)
        out.append((a, a + length, rng.randint(1, 2)))
    return out


def make_stream(seed: int, count: int, legs: int) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)  # nosec B311 (a seeded replay, not security)
    out = []
    for _ in range(count):
        a = rng.randrange(legs)
        b = rng.randrange(a + 1, legs + 1)
        out.append((a, b, rng.randint(1, 2)))
    return out


def sim_layout(schedule_id: str) -> Layout:
    far = int(time.time() * 1000) + 86_400_000
    coaches = [
        (car, "economy", [f"{row}{c}" for row in range(1, 14) for c in "ABCD"][:SEATS_PER_CAR])
        for car in range(1, CARS + 1)
    ]
    return Layout.build(schedule_id, STOPS, [far] * len(STOPS), coaches)


async def run_strategy(
    inv: Inventory, strategy: str, stream: list[tuple[int, int, int]]
) -> StrategyResult:
    layout = sim_layout(f"SIM-{strategy}")
    opened = await inv.open(layout)
    if opened.code != Code.OK:
        raise RuntimeError(f"open failed: {opened.code.name}")
    sold = legs_sold = 0
    rejected: list[tuple[int, int]] = []
    for n, (a, b, count) in enumerate(stream):
        req = HoldRequest(
            layout.schedule_id,
            "sim",
            a,
            b,
            600_000,
            seat_class="economy",
            count=count,
            strategy=strategy,
        )
        out = await inv.hold(req)
        if out.hold is None:
            rejected.append((a, b))
            continue
        code, _ = await inv.confirm_begin(out.hold.hold_id, "sim")
        if code != Code.OK or await inv.confirm(out.hold.hold_id, f"SIM{n}") != Code.OK:
            raise RuntimeError(f"confirm failed: {code.name}")
        sold += 1
        legs_sold += (b - a) * count
    snap = await inv.snapshot(layout.schedule_id)
    if snap is None:
        raise RuntimeError(f"schedule {layout.schedule_id} vanished during the simulation")
    usable: set[tuple[int, int]] = set()
    free_by_leg = [views.seat_states(layout, snap, k, k + 1) for k in range(layout.n_legs)]
    for a, b in set(rejected):
        for i, state in enumerate(views.seat_states(layout, snap, a, b)):
            if state == "free":
                usable.update((i, k) for k in range(a, b))
    free = [(i, k) for k, row in enumerate(free_by_leg) for i, s in enumerate(row) if s == "free"]
    return StrategyResult(
        strategy=strategy,
        requests=len(stream),
        journeys_sold=sold,
        seat_legs_sold=legs_sold,
        seat_legs_free=len(free),
        stranded_seat_legs=sum(1 for seat_leg in free if seat_leg not in usable),
        capacity_seat_legs=layout.n_seats * layout.n_legs,
    )


STREAMS = {"uniform": make_stream, "phased": make_phased_stream}


async def simulate(
    redis_url: str, seed: int, requests: int, demand: str = "uniform"
) -> list[StrategyResult]:
    client = aioredis.from_url(redis_url)
    prefix = "sim" + secrets.token_hex(6)
    try:
        inv = Inventory(client, Keys(prefix))
        await inv.load_scripts()
        stream = STREAMS[demand](seed, requests, len(STOPS) - 1)
        return [await run_strategy(inv, s, stream) for s in ("best", "first")]
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
        await client.aclose()


def format_table(results: list[StrategyResult]) -> str:
    head = "| strategy | requests | journeys sold | seat-legs sold | free seat-legs | stranded |"
    rows = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(
            f"| {r.strategy} | {r.requests} | {r.journeys_sold} | {r.seat_legs_sold} "
            f"| {r.seat_legs_free} | {r.stranded_seat_legs} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kai_inventory.engine.simulate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--demand", choices=sorted(STREAMS), default="uniform")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = asyncio.run(simulate(args.redis_url, args.seed, args.requests, args.demand))
    if args.json:
        sys.stdout.write(msgspec.json.encode(results).decode() + "\n")
    else:
        sys.stdout.write(format_table(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
