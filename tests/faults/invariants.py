"""The invariants every fault run must keep, checked from the client history and both stores.

``check_all(...)`` waits until Redis agrees with Postgres (the service's own reconcile; the
time it took is the run's *time to recover*), then asserts:

1. no seat-leg sold twice: in the replies (bookings confirmed 2xx and never cancelled by the
   client do not overlap), in Postgres (live tickets do not overlap) and in Redis (a seat-leg
   is never both held and sold; sold equals Postgres);
2. every confirm answered 2xx is in Postgres (confirmed, or cancelled when the client
   cancelled it; a cancel answered 200 is cancelled);
3. Redis equals Postgres: ``kai-inventory verify`` (the same code, in process) returns 0;
4. free + held + sold = capacity on every leg: the service's own availability for the leg
   (HTTP) plus the held and sold bits Redis holds add up to the seats of the train;
5. an idempotent retry gives one booking (per hold id one booking number, at most one 201)
   and one hold (per Idempotency-Key one hold id);
6. expired holds are free within TTL + 1 s: no hold in the deadline sets is more than 1 s
   past its deadline, the held bits are exactly the seats of live holds, and every hold the
   workload abandoned whose expiry passed is expired (or gone with a lost Redis).

WebSocket checks live in ``check_ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections import defaultdict
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from kai_inventory.engine.keys import Keys
from kai_inventory.engine.layout import Layout
from kai_inventory.sales.commands import _verify, open_sales
from kai_inventory.settings import Settings
from tests.faults.workload import Record, ScheduleSpec, WsWatcher


class InvariantError(AssertionError):
    pass


def _expect(ok: bool, message: str, problems: list[str]) -> None:
    if not ok:
        problems.append(message)


async def wait_for_agreement(settings: Settings, timeout_s: float = 30.0) -> float:
    """Seconds until Redis agreed with Postgres on every open schedule (no repair by us)."""
    started = time.monotonic()
    last: list[str] = []
    while time.monotonic() - started < timeout_s:
        try:
            async with open_sales(settings) as sales:
                last = []
                for sid in await sales._open_ids(None):
                    last += [d.describe() for d in await sales.differences(sid)]
            if not last:
                return time.monotonic() - started
        except Exception as exc:  # a store still coming back
            last = [f"{type(exc).__name__}: {exc}"]
        await asyncio.sleep(0.5)
    raise InvariantError(f"Redis never agreed with Postgres within {timeout_s}s: {last[:10]}")


async def verify_exit_code(settings: Settings) -> int:
    """``kai-inventory verify`` (without --repair), its output captured."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        return await _verify(settings, repair=False)


def _bit(bitmap: bytes, legs: int, leg: int, seat: int) -> bool:
    i = seat // 8 * legs + leg
    return i < len(bitmap) and bool(bitmap[i] & (0x80 >> (seat % 8)))


async def _pg_state(dsn: str) -> tuple[dict[str, tuple[str, str]], list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        bookings = {
            r["booking_number"]: (r["hold_id"], r["status"])
            for r in await conn.fetch(
                "SELECT booking_number, hold_id, status::text AS status FROM bookings"
            )
        }
        tickets = [
            (r["schedule_id"], r["seat"], r["from_index"], r["to_index"], r["booking_number"])
            for r in await conn.fetch(
                """SELECT t.schedule_id, s.car_number || '-' || s.seat_number AS seat,
                          t.from_index, t.to_index, b.booking_number
                   FROM tickets t JOIN seats s ON s.id = t.seat_id
                   JOIN bookings b ON b.id = t.booking_id
                   WHERE t.ticket_status <> 'cancelled'"""
            )
        ]
    finally:
        await conn.close()
    return bookings, tickets


def _overlaps(entries: list[tuple[str, str, int, int, str]]) -> list[str]:
    """(schedule, seat, a, b, booking) entries of different bookings sharing a seat-leg."""
    owner: dict[tuple[str, str, int], str] = {}
    clashes: list[str] = []
    for schedule, seat, a, b, booking in entries:
        for leg in range(a, b):
            key = (schedule, seat, leg)
            other = owner.setdefault(key, booking)
            if other != booking:
                clashes.append(f"{schedule} {seat} leg {leg}: {other} and {booking}")
    return clashes


def check_replies(
    history: list[Record], specs: list[ScheduleSpec]
) -> tuple[list[str], dict[str, Any]]:
    problems: list[str] = []
    stations = {s.schedule_id: s.stations for s in specs}
    per_hold: dict[str, set[str]] = defaultdict(set)
    created: dict[str, int] = defaultdict(int)
    per_key: dict[str, set[str]] = defaultdict(set)
    cancel_sent: set[str] = set()
    cancel_ok: set[str] = set()
    confirmed: dict[str, Record] = {}
    for r in history:
        if r.op == "hold" and r.status == 201 and r.key:
            per_key[r.key].add(r.body["hold_id"])
        elif r.op == "confirm" and r.status in (200, 201) and r.hold_id and r.booking:
            per_hold[r.hold_id].add(r.booking)
            created[r.hold_id] += r.status == 201
            confirmed.setdefault(r.booking, r)
        elif r.op == "cancel" and r.booking:
            cancel_sent.add(r.booking)
            if r.status == 200:
                cancel_ok.add(r.booking)
    failures = [r for r in history if r.status == 500]
    _expect(
        not failures,
        f"{len(failures)} answers were 500: {[r.body for r in failures[:3]]}",
        problems,
    )
    for key, holds in per_key.items():
        _expect(len(holds) == 1, f"Idempotency-Key {key} made {len(holds)} holds", problems)
    for hold, numbers in per_hold.items():
        _expect(len(numbers) == 1, f"hold {hold} confirmed as {sorted(numbers)}", problems)
        _expect(created[hold] <= 1, f"hold {hold} answered 201 {created[hold]} times", problems)
    live: list[tuple[str, str, int, int, str]] = []
    for booking, r in confirmed.items():
        if booking in cancel_sent:
            continue
        st = stations[r.schedule_id]
        a, b = st.index(r.body["from"]), st.index(r.body["to"])
        live += [(r.schedule_id, t["seat"], a, b, booking) for t in r.body["tickets"]]
    for clash in _overlaps(live):
        problems.append(f"sold twice in the replies: {clash}")
    facts = {
        "confirmed": confirmed,
        "cancel_sent": cancel_sent,
        "cancel_ok": cancel_ok,
        "bookings_answered": len(confirmed),
    }
    return problems, facts


async def check_stores(
    settings: Settings,
    base_url: str,
    specs: list[ScheduleSpec],
    facts: dict[str, Any],
    expiring: list[tuple[str, float]],
) -> list[str]:
    problems: list[str] = []
    bookings, tickets = await _pg_state(settings.database_url)
    # 2. every 2xx confirm is in Postgres
    lost = 0
    for booking in facts["confirmed"]:
        row = bookings.get(booking)
        if row is None:
            lost += 1
            problems.append(f"booking {booking} answered 2xx is not in Postgres")
            continue
        if booking in facts["cancel_ok"]:
            _expect(row[1] == "cancelled", f"{booking} cancel answered 200 but {row[1]}", problems)
        elif booking not in facts["cancel_sent"]:
            _expect(row[1] == "confirmed", f"{booking} answered 2xx but {row[1]}", problems)
    facts["lost"] = lost
    # 1. Postgres: no live seat-leg twice
    clashes = _overlaps(tickets)
    facts["sold_twice"] = len(clashes)
    problems += [f"sold twice in Postgres: {c}" for c in clashes]
    # Redis: bitmaps, holds, capacity
    keys = Keys(settings.key_prefix)
    client = aioredis.from_url(settings.redis_url)
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for spec in specs:
                sk = keys.schedule(spec.schedule_id)
                blob = await client.get(sk.layout)
                if blob is None:
                    problems.append(f"{spec.schedule_id} missing in Redis after recovery")
                    continue
                assert isinstance(blob, bytes)
                layout = Layout.decode(blob)
                legs = layout.n_legs
                # one atomic read, so the reaper cannot change things between the parts
                pipe = client.pipeline(transaction=True)
                pipe.get(sk.sold)
                pipe.get(sk.taken)
                pipe.zrange(sk.deadlines, 0, -1, withscores=True)
                pipe.time()
                sold_raw, taken_raw, live, (now_s, now_us) = await pipe.execute()
                sold, taken = sold_raw or b"", taken_raw or b""
                now_ms = int(now_s) * 1000 + int(now_us) // 1000
                live_bits: set[tuple[int, int]] = set()
                for hold_id, deadline in live:
                    hid = hold_id.decode()
                    _expect(
                        deadline >= now_ms - 1000,
                        f"hold {hid} is {now_ms - deadline:.0f} ms past its deadline, not reaped",
                        problems,
                    )
                    fields: dict[Any, Any] = await client.hgetall(sk.hold(hid))
                    a, b = int(fields[b"a"]), int(fields[b"b"])
                    for seat in (int(x) for x in fields[b"seats"].split(b",") if x):
                        live_bits.update((leg, seat) for leg in range(a, b))
                for leg in range(layout.n_legs):
                    n_sold = n_held = 0
                    for seat in range(layout.n_seats):
                        s, t = _bit(sold, legs, leg, seat), _bit(taken, legs, leg, seat)
                        h = t and not s  # held: taken, not sold
                        n_sold += s
                        n_held += h
                        sid = layout.seat_ids[seat]
                        _expect(
                            t or not s,
                            f"{spec.schedule_id} {sid} leg {leg} sold, not taken",
                            problems,
                        )
                        _expect(
                            not (s and (leg, seat) in live_bits),
                            f"{spec.schedule_id} {sid} leg {leg} held+sold",
                            problems,
                        )
                        _expect(
                            h == ((leg, seat) in live_bits),
                            f"{spec.schedule_id} {sid} leg {leg}: held bit {h} but live holds say "
                            f"{(leg, seat) in live_bits}",
                            problems,
                        )
                    async with http.get(
                        f"{base_url}/v1/schedules/{spec.schedule_id}/availability",
                        params={"from": spec.stations[leg], "to": spec.stations[leg + 1]},
                    ) as response:
                        body = await response.json()
                    free = sum(c["available"] for c in body["classes"])
                    _expect(
                        free + n_held + n_sold == layout.n_seats,
                        f"{spec.schedule_id} leg {leg}: free {free} + held {n_held} + sold "
                        f"{n_sold} != {layout.n_seats}",
                        problems,
                    )
            # 6. abandoned holds past expiry + 1 s are expired (or were lost with Redis)
            for hold_id, expires in expiring:
                if expires + 1 > time.time():
                    continue
                sid = hold_id.split(".", 1)[0]
                status = await client.hget(keys.schedule(sid).hold(hold_id), "st")
                _expect(  # released: revoked by a rebuild that found its seats sold
                    status in (None, b"expired", b"released"),
                    f"abandoned hold {hold_id} is {status!r} after its expiry + 1 s",
                    problems,
                )
    finally:
        await client.aclose()
    return problems


async def check_all(
    settings: Settings,
    base_url: str,
    specs: list[ScheduleSpec],
    history: list[Record],
    expiring: list[tuple[str, float]],
    recover_timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Wait for agreement, check every invariant; raise InvariantError listing all breaches.
    Returns the numbers for docs/RELIABILITY.md."""
    recovered_s = await wait_for_agreement(settings, recover_timeout_s)
    code = await verify_exit_code(settings)
    problems, facts = check_replies(history, specs)
    _expect(code == 0, f"kai-inventory verify exited {code}", problems)
    # the shortest abandoned TTL is 2 s: let every abandoned hold pass expiry + 1 s
    latest = max((e for _, e in expiring), default=0.0)
    wait = latest + 1.2 - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    problems += await check_stores(settings, base_url, specs, facts, expiring)
    if problems:
        raise InvariantError(f"{len(problems)} invariant breaches:\n" + "\n".join(problems[:40]))
    return {
        "recover_s": round(recovered_s, 2),
        "lost": facts["lost"],
        "sold_twice": facts["sold_twice"],
        "bookings": facts["bookings_answered"],
    }


async def check_watchers(
    watcher: WsWatcher,
    base_url: str,
    resync_after: float | None = None,
    timeout_s: float = 10.0,
    monotonic: bool = True,
) -> dict[str, Any]:
    """Every subscription's versions only grow; with ``resync_after`` (the time Redis came
    back after losing the pub/sub connection, i.e. events were missed) every subscription
    that lived through it got a snapshot after it; and every live subscription converges on
    what the HTTP API answers (same version, same availability)."""
    problems: list[str] = []
    subs = {f["sub"] for f in watcher.frames if "sub" in f}
    regressions = [p for sub in subs for p in check_ws(watcher.frames, sub)]
    if monotonic:
        problems += regressions
    if resync_after is not None:
        for sub in watcher.live_subs():
            times = [f["_t"] for f in watcher.frames if f.get("sub") == sub]
            if times and min(times) < resync_after:
                _expect(
                    any(
                        f.get("sub") == sub and f["type"] == "snapshot" and f["_t"] >= resync_after
                        for f in watcher.frames
                    ),
                    f"sub {sub} lived through the gap but got no snapshot after it",
                    problems,
                )
    deadline = time.monotonic() + timeout_s
    stale: list[str] = []
    async with aiohttp.ClientSession() as http:
        while True:
            stale = []
            latest = watcher.latest()
            live = watcher.live_subs()
            answers: dict[str, Any] = {}
            for schedule in set(live.values()):
                async with http.get(f"{base_url}/v1/schedules/{schedule}/availability") as r:
                    answers[schedule] = await r.json()
            for sub, schedule in live.items():
                body = answers[schedule]
                seen = latest.get(sub)
                # an update is sent only when the view changed, so the versions may differ;
                # what the subscriber shows must equal what HTTP answers, never from the future
                if (
                    seen is None
                    or seen["classes"] != body["classes"]
                    or seen["version"] > body["version"]
                ):
                    stale.append(
                        f"sub {sub}: saw {seen and (seen['version'], seen['classes'])}, "
                        f"HTTP {body['version'], body['classes']}"
                    )
            if not stale or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    problems += stale
    if problems:
        raise InvariantError("WebSocket:\n" + "\n".join(problems[:20]))
    return {
        "ws_frames": len(watcher.frames),
        "ws_reconnects": watcher.reconnects,
        "ws_version_regressions": len(regressions),
    }


def check_ws(frames: list[dict[str, Any]], sub: str) -> list[str]:
    """Per subscription: versions never go back; updates strictly grow; after a resync
    (a snapshot that is not the first message) the versions keep growing."""
    problems: list[str] = []
    last = -1
    for frame in frames:
        if frame.get("sub") != sub or frame.get("type") not in ("snapshot", "update"):
            continue
        v = int(frame["version"])
        if frame["type"] == "update":
            _expect(v > last, f"sub {sub}: update version {v} after {last}", problems)
        else:
            _expect(v >= last, f"sub {sub}: snapshot version {v} after {last}", problems)
        last = max(last, v)
    return problems
