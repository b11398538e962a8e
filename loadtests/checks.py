"""After a Locust run: thresholds (thresholds.toml) and the oversell check.

    python loadtests/checks.py --csv PREFIX --summary SUMMARY.json --profile smoke \
        [--base-url http://127.0.0.1:8080] [--database-url postgresql://...]

Exit 0 when every rule holds, 1 otherwise (each broken rule printed on its own line).

Oversell is looked for three ways, each independent of the others:
1. the tickets the load test itself got back from confirms: no seat may be sold twice on a leg;
2. the seat maps (``GET .../seatmap`` per single leg): every ticket's seat shows ``sold`` on each
   of its legs, and, with Postgres, the sold seat-legs are exactly those of active tickets;
3. Postgres: no two active tickets of a schedule share a seat on an overlapping leg range.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from kaiload import ScheduleInfo, http_json  # noqa: E402


@dataclass
class Thresholds:
    max_error_rate: float = 0.001
    max_5xx: int = 0
    max_oversold_seat_legs: int = 0
    min_requests: int = 0
    p99_ms: dict[str, float] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)


def load_thresholds(path: Path, profile: str | None = None) -> Thresholds:
    """``[defaults]`` overridden key by key by the ``[profile]`` table (p99_ms merged by name)."""
    data = tomllib.loads(path.read_text())
    merged: dict[str, Any] = dict(data.get("defaults", {}))
    p99 = dict(merged.pop("p99_ms", {}))
    required = list(merged.pop("required", {}).get("names", []))
    if profile:
        if profile not in data:
            raise KeyError(f"no profile [{profile}] in {path}")
        override = dict(data[profile])
        p99.update(override.pop("p99_ms", {}))
        if "required" in override:
            required = list(override.pop("required").get("names", []))
        merged.update(override)
    return Thresholds(
        max_error_rate=float(merged.get("max_error_rate", 0.001)),
        max_5xx=int(merged.get("max_5xx", 0)),
        max_oversold_seat_legs=int(merged.get("max_oversold_seat_legs", 0)),
        min_requests=int(merged.get("min_requests", 0)),
        p99_ms={k: float(v) for k, v in p99.items()},
        required=required,
    )


@dataclass(frozen=True)
class StatRow:
    name: str
    requests: int
    failures: int
    p99_ms: float | None


def read_stats(csv_prefix: str) -> dict[str, StatRow]:
    """Locust's ``<prefix>_stats.csv``: one row per request name plus ``Aggregated``."""
    rows: dict[str, StatRow] = {}
    with open(f"{csv_prefix}_stats.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            raw = row.get("99%", "N/A")
            p99 = None if raw in ("", "N/A") else float(raw)
            name = row["Name"]
            rows[name] = StatRow(name, int(row["Request Count"]), int(row["Failure Count"]), p99)
    return rows


def count_5xx(status_counts: Mapping[str, Mapping[str, int]]) -> int:
    return sum(n for per in status_counts.values() for s, n in per.items() if int(s) >= 500)


def evaluate(
    stats: Mapping[str, StatRow],
    status_counts: Mapping[str, Mapping[str, int]],
    thresholds: Thresholds,
    oversold: int,
) -> list[str]:
    """Every broken rule, as one readable line each (empty: the run passes)."""
    problems: list[str] = []
    total = stats.get("Aggregated")
    if total is None or total.requests == 0:
        return ["no requests were made"]
    if total.requests < thresholds.min_requests:
        problems.append(f"only {total.requests} requests (at least {thresholds.min_requests})")
    rate = total.failures / total.requests
    if rate > thresholds.max_error_rate:
        problems.append(
            f"error rate {rate:.4%} > {thresholds.max_error_rate:.4%}"
            f" ({total.failures} of {total.requests})"
        )
    fives = count_5xx(status_counts)
    if fives > thresholds.max_5xx:
        problems.append(f"{fives} answers were 5xx (at most {thresholds.max_5xx})")
    if oversold > thresholds.max_oversold_seat_legs:
        problems.append(
            f"{oversold} seat-legs oversold (at most {thresholds.max_oversold_seat_legs})"
        )
    for name in thresholds.required:
        row = stats.get(name)
        if row is None or row.requests == 0:
            problems.append(f"{name}: never ran")
    for name, limit in thresholds.p99_ms.items():
        row = stats.get(name)
        if row is None or row.p99_ms is None:
            continue
        if row.p99_ms > limit:
            problems.append(f"{name}: p99 {row.p99_ms:.0f} ms > {limit:.0f} ms")
    return problems


# --- oversell -------------------------------------------------------------------------------

SeatLeg = tuple[str, str, int]  # schedule, seat, leg


@dataclass(frozen=True)
class Ticket:
    schedule_id: str
    seat: str
    a: int  # first leg
    b: int  # one past the last leg
    ref: str = ""


def find_overlaps(tickets: Iterable[Ticket]) -> list[tuple[Ticket, Ticket]]:
    """Pairs of tickets that sell the same seat on at least one common leg."""
    by_seat: dict[tuple[str, str], list[Ticket]] = defaultdict(list)
    for t in tickets:
        by_seat[(t.schedule_id, t.seat)].append(t)
    clashes: list[tuple[Ticket, Ticket]] = []
    for group in by_seat.values():
        group.sort(key=lambda t: (t.a, t.b))
        reach: Ticket | None = None  # the ticket reaching furthest so far
        for t in group:
            if reach is not None and t.a < reach.b:
                clashes.append((reach, t))
            if reach is None or t.b > reach.b:
                reach = t
    return clashes


@dataclass(frozen=True)
class HeldSeat:
    """One seat of a hold, held on legs [a, b) from ``start`` to ``end`` (Redis ms)."""

    schedule_id: str
    seat: int
    a: int
    b: int
    start: int
    end: int
    ref: str = ""


def held_twice(holds: Iterable[HeldSeat]) -> list[tuple[HeldSeat, HeldSeat]]:
    """Pairs of holds that had one seat on a common leg at the same time: an oversell before
    any confirm. A hold ends at ``end``; a later hold may start at that very millisecond."""
    by_seat: dict[tuple[str, int], list[HeldSeat]] = defaultdict(list)
    for h in holds:
        by_seat[(h.schedule_id, h.seat)].append(h)
    clashes: list[tuple[HeldSeat, HeldSeat]] = []
    for group in by_seat.values():
        group.sort(key=lambda h: h.start)
        live: list[HeldSeat] = []
        for h in group:
            live = [o for o in live if o.end > h.start]
            clashes += [(o, h) for o in live if o.a < h.b and h.a < o.b]
            live.append(h)
    return clashes


def oversold_seat_legs(tickets: Iterable[Ticket]) -> set[SeatLeg]:
    """Every (schedule, seat, leg) covered by more than one ticket."""
    seen: set[SeatLeg] = set()
    twice: set[SeatLeg] = set()
    for t in tickets:
        for leg in range(t.a, t.b):
            key = (t.schedule_id, t.seat, leg)
            (twice if key in seen else seen).add(key)
    return twice


def seat_legs(tickets: Iterable[Ticket]) -> set[SeatLeg]:
    return {(t.schedule_id, t.seat, leg) for t in tickets for leg in range(t.a, t.b)}


def tickets_from_summary(summary: Mapping[str, Any]) -> list[Ticket]:
    stops = {s["schedule_id"]: s["stops"] for s in summary["schedules"]}
    out = []
    for t in summary.get("tickets", []):
        legs = stops[t["schedule_id"]]
        out.append(
            Ticket(
                t["schedule_id"],
                t["seat"],
                legs.index(t["from"]),
                legs.index(t["to"]),
                t["booking"],
            )
        )
    return out


def seatmap_sold(base_url: str, info: ScheduleInfo) -> set[SeatLeg]:
    """Sold seat-legs as the API shows them: one single-leg seat map per leg."""
    sold: set[SeatLeg] = set()
    for leg in range(info.n_legs):
        a, b = info.stops[leg], info.stops[leg + 1]
        status, body = http_json(
            "GET", f"{base_url}/v1/schedules/{info.schedule_id}/seatmap?from={a}&to={b}"
        )
        if status != 200:
            raise RuntimeError(f"seatmap {info.schedule_id} {a}-{b}: HTTP {status} {body}")
        for coach in body["coaches"]:
            for seat in coach["seats"]:
                if seat["state"] == "sold":
                    sold.add((info.schedule_id, seat["seat"], leg))
    return sold


# Live tickets of the run's schedules with their leg range [from_index, to_index) (see
# migrations/0003_sales.sql; the seat id is "<car>-<label>" as on the wire).
PG_TICKETS_SQL = """
SELECT t.schedule_id, s.car_number::text || '-' || s.seat_number, t.from_index, t.to_index,
       b.booking_number
FROM tickets t
JOIN seats s ON s.id = t.seat_id
JOIN bookings b ON b.id = t.booking_id
WHERE t.schedule_id LIKE $1 AND t.ticket_status <> 'cancelled'
"""


def postgres_tickets(database_url: str, prefix: str) -> list[Ticket]:
    import asyncio

    import asyncpg

    async def fetch() -> list[Ticket]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(PG_TICKETS_SQL, prefix + "-%")
        finally:
            await conn.close()
        return [Ticket(r[0], r[1], int(r[2]), int(r[3]), r[4]) for r in rows]

    return asyncio.run(fetch())


@dataclass
class OversellReport:
    oversold: int = 0
    lines: list[str] = field(default_factory=list)


def oversell_check(
    summary: Mapping[str, Any], base_url: str | None, database_url: str | None
) -> OversellReport:
    report = OversellReport()
    mine = tickets_from_summary(summary)
    twice = oversold_seat_legs(mine)
    for a, b in find_overlaps(mine)[:20]:
        report.lines.append(f"sold twice (load-test tickets): {a} and {b}")
    report.oversold += len(twice)
    report.lines.append(f"{len(mine)} tickets confirmed by the load test")

    pg: list[Ticket] | None = None
    if database_url:
        pg = postgres_tickets(database_url, summary["run"])
        pg_twice = oversold_seat_legs(pg)
        for a, b in find_overlaps(pg)[:20]:
            report.lines.append(f"sold twice (Postgres): {a} and {b}")
        report.oversold += len(pg_twice)
        missing = seat_legs(mine) - seat_legs(pg)
        if missing:
            report.oversold += len(missing)
            report.lines.append(f"{len(missing)} confirmed seat-legs missing in Postgres")
        report.lines.append(f"{len(pg)} active tickets in Postgres")

    if base_url:
        infos = [ScheduleInfo.from_json(s) for s in summary["schedules"]]
        shown: set[SeatLeg] = set()
        for info in infos:
            shown |= seatmap_sold(base_url, info)
        expected = seat_legs(pg if pg is not None else mine)
        unsold = expected - shown
        if unsold:
            report.oversold += len(unsold)
            report.lines.append(
                f"{len(unsold)} ticketed seat-legs not shown sold, e.g. {sorted(unsold)[:5]}"
            )
        if pg is not None:
            ghost = shown - expected
            if ghost:
                report.oversold += len(ghost)
                report.lines.append(
                    f"{len(ghost)} seat-legs shown sold without a ticket, e.g. {sorted(ghost)[:5]}"
                )
        report.lines.append(f"{len(shown)} sold seat-legs on the seat maps")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="Locust --csv prefix")
    parser.add_argument("--summary", required=True, help="KAILT_SUMMARY file of the run")
    parser.add_argument("--thresholds", default=str(HERE / "thresholds.toml"))
    parser.add_argument("--profile", default=None)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)

    thresholds = load_thresholds(Path(args.thresholds), args.profile)
    stats = read_stats(args.csv)
    summary = json.loads(Path(args.summary).read_text())
    report = oversell_check(summary, args.base_url, args.database_url)
    for line in report.lines:
        print(f"oversell check: {line}")
    problems = evaluate(stats, summary.get("status_counts", {}), thresholds, report.oversold)
    total = stats.get("Aggregated")
    if total:
        print(f"thresholds: {total.requests} requests, {total.failures} failures")
    for name, row in sorted(stats.items()):
        if name != "Aggregated" and row.p99_ms is not None:
            limit = thresholds.p99_ms.get(name)
            budget = f" (budget {limit:.0f})" if limit else ""
            print(f"  p99 {row.p99_ms:7.0f} ms{budget}  n={row.requests:<6} {name}")
    for problem in problems:
        print(f"THRESHOLD MISSED: {problem}")
    if not problems:
        print("thresholds: all met")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
