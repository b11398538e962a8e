"""Script cost inside Redis: ``python -m kai_inventory.engine.bench``.

Starts a private ``redis-server`` on a free loopback port (or uses ``--redis-url``), opens one
schedule of 1,000 seats (20 cars of 50 economy) and 21 stops (20 legs), and for each measured
operation runs ``CONFIG RESETSTAT``, the operation through ``Inventory`` (so the exact FCALL /
EVALSHA calls the service makes) ``--in-flight`` calls at a time (default 64: the auto-pipeline
sends them as one batch, as under load; with 1, each call waits for the last one's reply and
Redis idles between calls, which on these VMs reads 2-3x higher for the same script), then
reads ``INFO commandstats``: ``usec`` over
``calls`` of ``fcall``, ``fcall_ro`` and ``evalsha`` together (``--compare`` may measure an older
``lua/`` whose scripts are EVALSHA ones): time spent inside Redis per call, independent of the
client and the network.
Also reports ``MEMORY USAGE`` of the schedule's keys (what one schedule costs a shard).

Operations:

- ``hold_seats``: 4 adjacent seats over all 20 legs, granted, limit/rate/idempotency on;
- ``hold_class_best`` / ``hold_class_first``: 2 economy seats, random journey, granted;
- ``hold_class_loaded``: 1 or 2 economy seats, random journey, best fit, with 400 such holds
  live already (the load of a train under ``loadtests/bench.py``'s hold scenario);
- ``snapshot``: unconditional read (version -1);
- ``release``: of a granted 4-seat hold.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis

from kai_inventory.engine.inventory import HoldRequest, Inventory
from kai_inventory.engine.keys import Keys
from kai_inventory.engine.layout import Layout
from kai_inventory.localstack import private_redis

T = TypeVar("T")

SCHEDULE = "BENCH"
STOPS = [f"S{i:02d}" for i in range(21)]


class Measure(msgspec.Struct, frozen=True):
    operation: str
    calls: int
    usec_per_call: float


class Report(msgspec.Struct, frozen=True):
    redis_version: str
    baseline_usec: float  # EVALSHA of `return 1`
    measures: list[Measure]
    memory_bytes: dict[str, int]
    schedule_bytes: int
    hold_bytes: int = 0  # one live 4-seat hold: its hash, deadline entry, user zset and idem key


def bench_layout(schedule_id: str = SCHEDULE) -> Layout:
    far = int(time.time() * 1000) + 30 * 86_400_000
    coaches = [
        (car, "economy", [f"{r}{c}" for r in range(1, 14) for c in "ABCD"][:50])
        for car in range(1, 21)
    ]
    return Layout.build(schedule_id, STOPS, [far] * len(STOPS), coaches)


SCRIPT_COMMANDS = ("evalsha", "fcall", "fcall_ro")


async def _usec_per_call(
    client: aioredis.Redis, commands: tuple[str, ...] = SCRIPT_COMMANDS
) -> tuple[int, float]:
    """Calls and mean usec per call over the script commands (EVALSHA, FCALL, FCALL_RO)."""
    stats = await client.info("commandstats")
    calls, usec = 0, 0.0
    for command in commands:
        entry = stats.get(f"cmdstat_{command}")
        if entry:
            calls += int(entry["calls"])
            usec += float(entry["usec"])
    return calls, (usec / calls if calls else 0.0)


# live class holds (1-2 seats, random journeys) on the schedule before hold_class_loaded is
# measured: about the load of a train under the benchmark's hold scenario (loadtests/bench.py)
LOADED_HOLDS = 400

BATCH = 64  # calls in flight at once: the auto-pipeline sends them as one batch, as under load


async def in_flight_batches(
    calls: Sequence[Callable[[], Awaitable[T]]], in_flight: int = BATCH
) -> list[T]:
    """Run ``calls`` ``in_flight`` at a time (each batch awaited before the next), in order."""
    results: list[T] = []
    for start in range(0, len(calls), in_flight):
        results += await asyncio.gather(*(call() for call in calls[start : start + in_flight]))
    return results


async def _measure(
    client: aioredis.Redis,
    name: str,
    op: Callable[[int], Awaitable[Any]],
    calls: int,
    in_flight: int,
) -> Measure:
    await client.config_resetstat()
    await in_flight_batches([functools.partial(op, i) for i in range(calls)], in_flight)
    n, usec = await _usec_per_call(client)
    return Measure(name, n, usec)


async def run(
    redis_url: str, calls: int, seed: int = 1, lua: Path | None = None, in_flight: int = BATCH
) -> Report:
    client = aioredis.from_url(redis_url)
    prefix = "bench" + str(random.Random(seed).randrange(1 << 30))  # nosec B311
    keys = Keys(prefix)
    inv = Inventory(client, keys)
    if lua is not None:  # another version of the scripts, for a before/after comparison
        inv.scripts.use(lua)
    try:
        await inv.load_scripts()
        info = await client.info("server")
        sha1 = await client.script_load("return 1")
        await client.config_resetstat()
        for start in range(0, calls, in_flight):
            pipe = client.pipeline(transaction=False)
            for _ in range(start, min(calls, start + in_flight)):
                pipe.evalsha(sha1, 0)
            await pipe.execute()
        _, baseline = await _usec_per_call(client, ("evalsha",))

        layout = bench_layout()
        rng = random.Random(seed)  # nosec B311 (benchmark data)
        measures: list[Measure] = []

        async def reopen() -> None:
            sk = keys.schedule(SCHEDULE)
            await client.delete(sk.meta, sk.sold, sk.taken, sk.deadlines)
            await inv.open(layout)

        # hold_seats: 250 holds of 4 adjacent seats fill all 1,000 seats on all 20 legs
        total_seats: list[Measure] = []
        hold_bytes = 0
        done = 0
        while done < calls:
            await reopen()
            batch = min(250, calls - done)
            start = done

            async def hold4(i: int, start: int = start) -> None:
                req = HoldRequest(
                    SCHEDULE,
                    f"user{i + start}",
                    0,
                    20,
                    600_000,
                    seats=[4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3],
                    max_active=3,
                    rate_per_min=30,
                    idempotency_key=f"k{i + start}",
                    body_hash="h",
                )
                out = await inv.hold(req)
                if out.hold is None:
                    raise RuntimeError(f"bench hold refused: {out.code!r}")

            total_seats.append(await _measure(client, "hold_seats", hold4, batch, in_flight))
            done += batch
            if batch == 250 and not hold_bytes:  # 250 live holds: what one of them costs
                hold_bytes = await _hold_bytes(client, keys, start)
        n = sum(m.calls for m in total_seats)
        measures.append(
            Measure("hold_seats", n, sum(m.usec_per_call * m.calls for m in total_seats) / n)
        )

        def class_request(user: str, strategy: str, counts: tuple[int, ...]) -> HoldRequest:
            a = rng.randrange(20)
            b = rng.randrange(a + 1, 21)
            return HoldRequest(
                SCHEDULE,
                user,
                a,
                b,
                600_000,
                seat_class="economy",
                count=counts[0] if len(counts) == 1 else rng.choice(counts),  # the old draws
                strategy=strategy,
                max_active=3,
                rate_per_min=30,
            )

        async def class_hold(req: HoldRequest) -> None:
            out = await inv.hold(req)
            if out.hold is None:
                raise RuntimeError(f"bench class hold refused: {out.code!r}")

        async def measured_class_hold(
            name: str, base: int, strategy: str, counts: tuple[int, ...], i: int
        ) -> None:
            await class_hold(class_request(f"{name}:{base + i}", strategy, counts))

        # (measure, strategy, live holds made first (not measured), party sizes)
        class_cases = [
            ("hold_class_best", "best", 0, (2,)),
            ("hold_class_first", "first", 0, (2,)),
            ("hold_class_loaded", "best", LOADED_HOLDS, (1, 2)),
        ]
        for name, strategy, prefill, counts in class_cases:
            parts: list[Measure] = []
            done = 0
            while done < calls:
                await reopen()
                await in_flight_batches(
                    [
                        functools.partial(
                            class_hold, class_request(f"{name}:fill{i}", strategy, counts)
                        )
                        for i in range(prefill)
                    ],
                    in_flight,
                )
                batch = min(200, calls - done)
                op = functools.partial(measured_class_hold, name, done, strategy, counts)
                parts.append(await _measure(client, name, op, batch, in_flight))
                done += batch
            n = sum(m.calls for m in parts)
            measures.append(Measure(name, n, sum(m.usec_per_call * m.calls for m in parts) / n))

        await reopen()
        held: list[str] = []
        for k in range(min(calls, 250)):
            out = await inv.hold(
                HoldRequest(SCHEDULE, f"r{k}", 0, 20, 600_000, seats=[4 * k, 4 * k + 1])
            )
            if out.hold is not None:
                held.append(out.hold.hold_id)

        async def release(i: int) -> None:
            await inv.release(held[i], None)

        measures.append(await _measure(client, "release", release, len(held), in_flight))

        async def snap(_: int) -> None:
            inv._snapshots.pop(SCHEDULE, None)
            await inv.snapshot(SCHEDULE)

        measures.append(await _measure(client, "snapshot", snap, calls, in_flight))

        await reopen()
        sk = keys.schedule(SCHEDULE)
        memory = {}
        for name in ("meta", "layout", "sold", "taken"):
            memory[name] = int(await client.memory_usage(getattr(sk, name)) or 0)
        return Report(
            redis_version=str(info.get("redis_version")),
            baseline_usec=baseline,
            measures=measures,
            memory_bytes=memory,
            schedule_bytes=sum(memory.values()),
            hold_bytes=hold_bytes,
        )
    finally:
        batch_keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(batch_keys), 500):
            await client.delete(*batch_keys[i : i + 500])
        await client.aclose()


async def _hold_bytes(client: aioredis.Redis, keys: Keys, start: int) -> int:
    """Bytes per live hold with 250 of them on the bench schedule (the growth of the deadline
    zset over an empty one, plus one hold hash, user zset and idempotency record)."""
    sk = keys.schedule(SCHEDULE)
    deadlines = int(await client.memory_usage(sk.deadlines) or 0)
    members: list[Any] = list(await client.zrange(sk.deadlines, 0, 0))
    first = members[0].decode() if isinstance(members[0], bytes) else str(members[0])
    one_hold = int(await client.memory_usage(sk.hold(first)) or 0)
    uk = keys.user(f"user{start}")
    user = int(await client.memory_usage(uk.holds) or 0)
    idem = int(await client.memory_usage(uk.idempotency(f"k{start}")) or 0)
    return deadlines // 250 + one_hold + user + idem


def format_report(report: Report) -> str:
    lines = [
        f"redis {report.redis_version}; EVALSHA `return 1`: {report.baseline_usec:.2f} usec",
        "| operation | calls | usec_per_call |",
        "|---|---:|---:|",
    ]
    lines += [f"| {m.operation} | {m.calls} | {m.usec_per_call:.1f} |" for m in report.measures]
    parts = " + ".join(f"{k} {v}" for k, v in report.memory_bytes.items())
    lines.append(f"MEMORY USAGE: {parts} = {report.schedule_bytes} bytes")
    lines.append(f"one live hold: about {report.hold_bytes} bytes")
    return "\n".join(lines)


def _median_report(reports: list[Report]) -> Report:
    measures = []
    for i, m in enumerate(reports[0].measures):
        values = sorted(r.measures[i].usec_per_call for r in reports)
        measures.append(Measure(m.operation, m.calls, values[len(values) // 2]))
    baselines = sorted(r.baseline_usec for r in reports)
    return msgspec.structs.replace(
        reports[0], measures=measures, baseline_usec=baselines[len(baselines) // 2]
    )


async def _main(args: argparse.Namespace) -> list[tuple[str, Report]]:
    async def body(url: str) -> list[tuple[str, Report]]:
        variants: list[tuple[str, Path | None]] = [("current", None)]
        if args.compare:
            variants.insert(0, (f"scripts in {args.compare}", Path(args.compare)))
        runs: dict[str, list[Report]] = {name: [] for name, _ in variants}
        for _ in range(args.rounds):  # interleaved, so that machine noise hits both alike
            for name, lua in variants:
                runs[name].append(await run(url, args.calls, lua=lua, in_flight=args.in_flight))
        return [(name, _median_report(reports)) for name, reports in runs.items()]

    if args.redis_url:
        return await body(args.redis_url)
    with private_redis() as server:
        return await body(server.url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kai_inventory.engine.bench")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--redis-url", default="", help="default: a private redis-server")
    parser.add_argument("--rounds", type=int, default=1, help="median of this many runs")
    parser.add_argument("--compare", default="", help="a lua/ directory to measure alongside")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=BATCH,
        help="calls sent at once (default: a batch, as under load; 1: one per round trip)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(_main(args))
    if args.json:
        sys.stdout.write(msgspec.json.encode(dict(results)).decode() + "\n")
    else:
        for name, report in results:
            sys.stdout.write(f"## {name}\n{format_report(report)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
