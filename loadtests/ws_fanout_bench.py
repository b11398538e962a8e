"""WebSocket fan-out benchmark: prints numbers, asserts nothing.

    .venv/bin/python loadtests/ws_fanout_bench.py                       # the full matrix
    .venv/bin/python loadtests/ws_fanout_bench.py --subs 2000 --window 50 --seconds 8
    .venv/bin/python loadtests/ws_fanout_bench.py --subs 2000 --window 50 --slow 0.1

For each (N subscribers, coalescing window) it:

1. starts the service's WebSocket front in its own process (``server`` mode: real Redis, the
   engine's ``Inventory`` and ``kai_inventory.ws.setup_ws`` on a bare aiohttp app: exactly
   the fan-out path of ``kai-inventory serve``, without the HTTP API or Postgres, whose CPU
   would otherwise be counted as fan-out);
2. starts a cheap load generator: ``--procs`` processes of raw asyncio WebSocket clients
   (a hand-written frame parser; only ``--sample`` of the connections decode JSON, the
   others count frames), all subscribed (with seats) to one schedule;
3. makes a steady ``--rate`` holds per second (one new seat each) through the engine and
   records when each was sent;
4. reports delivered updates/s, push latency p50/p99 (hold sent -> the update showing that
   seat arrives; one clock, one machine), and the server's CPU seconds per 1,000 delivered
   frames (utime+stime of the server process over the measured window, from /proc);
5. measures the floor in the same run: a bare aiohttp server (``bare`` mode) writing the
   same update bytes to the same N connections at the same per-connection rate with the
   plain loop ``for ws in sockets: await ws.send_frame(frame)``; the service's CPU per
   frame is reported as a ratio to it.

With ``--slow F`` a fraction F of the connections stops reading after subscribing (their
transport is paused); latency is reported for the others.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from kai_inventory.localstack import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLK = os.sysconf("SC_CLK_TCK")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


# ---- server modes ------------------------------------------------------------------------------


def run_service(port: int, prefix: str, window_ms: int) -> None:
    import uvloop
    from aiohttp import web

    async def main() -> None:
        import redis.asyncio as aioredis

        from kai_inventory.context import CTX, AppContext
        from kai_inventory.engine.inventory import Inventory
        from kai_inventory.engine.keys import Keys
        from kai_inventory.settings import Settings
        from kai_inventory.ws import setup_ws

        settings = Settings(redis_url=REDIS_URL, key_prefix=prefix, ws_coalesce_ms=window_ms)
        client = aioredis.from_url(REDIS_URL)
        inventory = Inventory(client, Keys(prefix))
        await inventory.load_scripts()

        # a partial AppContext (no Postgres pool, no sales): setup_ws reads only settings,
        # inventory and, when there, sales
        ctx = SimpleNamespace(settings=settings, redis=client, inventory=inventory, sales=None)
        app = web.Application()
        app[CTX] = cast(AppContext, ctx)
        setup_ws(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print("listening", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def run_bare(port: int, frame_file: str, rate: float) -> None:
    """The floor: a plain aiohttp broadcast of the same bytes, awaiting each socket in turn."""
    import uvloop
    from aiohttp import WSMsgType, web

    body = Path(frame_file).read_bytes()  # an update frame, ``sub`` head included
    sockets: list[web.WebSocketResponse] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=4097)
        await ws.prepare(request)
        sockets.append(ws)
        async for _msg in ws:  # the subscribe message: answer as the service does
            await ws.send_frame(b'{"type":"subscribed","sub":"s1"}', WSMsgType.TEXT)
            await ws.send_frame(b'{"type":"snapshot","sub":"s1","version":0}', WSMsgType.TEXT)
        return ws

    async def broadcast() -> None:
        period = 1.0 / rate
        nxt = time.monotonic()
        while True:
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            for ws in list(sockets):
                if not ws.closed:
                    await ws.send_frame(body, WSMsgType.TEXT)

    async def outer() -> None:
        loop = asyncio.get_running_loop()
        go = loop.create_future()

        def wait_go() -> None:
            for line in sys.stdin:
                if line.strip() == "go":
                    loop.call_soon_threadsafe(go.set_result, None)
                    return

        app = web.Application()
        app.router.add_get("/v1/ws", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print("listening", flush=True)
        loop.run_in_executor(None, wait_go)
        await go
        await broadcast()

    uvloop.run(outer())


# ---- load generator ------------------------------------------------------------------------------


class WSClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, one masked subscribe frame, count frames."""

    def __init__(
        self, shared: dict[str, Any], sub_msg: bytes, sample: bool, slow: bool, port: int
    ) -> None:
        self.shared = shared
        self.sub_msg = sub_msg
        self.sample = sample
        self.slow = slow
        self.port = port
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typeshed types the argument BaseTransport; a stream connection's is a Transport
        self.transport = stream = cast(asyncio.Transport, transport)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        stream.write(
            (
                f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(bytes(buf[:200]))
            del buf[: end + 4]
            self.upgraded = True
            n = len(self.sub_msg)  # masked with a zero key: payload bytes unchanged
            assert self.transport is not None
            self.transport.write(bytes([0x81, 0x80 | n]) + b"\0\0\0\0" + self.sub_msg)
        shared = self.shared
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + length:
                break
            start = pos + head
            kind = buf[start + 9 : start + 12]  # {"type":"upd / "sna / "sub
            if kind == b"upd":
                shared["updates"] += 1
                bucket = int(time.time() * 10)
                counts = shared["buckets"]
                counts[bucket] = counts.get(bucket, 0) + 1
                if self.sample:
                    msg = json.loads(bytes(buf[start : start + length]))
                    now = time.time()
                    for seat, st in msg.get("seats", {}).items():
                        if st == "held":
                            shared["arrivals"].append((seat, now))
                    if shared["frame"] is None:
                        shared["frame"] = bytes(buf[start : start + length])
            elif kind == b"sna":
                shared["snapshots"] += 1
                if self.slow and self.transport is not None:
                    self.transport.pause_reading()
            pos = start + length
        if pos:
            del buf[:pos]


def run_clients(
    port: int, count: int, sample_every: int, slow_frac: float, schedule_id: str
) -> None:
    import uvloop

    shared: dict[str, Any] = {
        "updates": 0,
        "snapshots": 0,
        "buckets": {},
        "arrivals": [],
        "frame": None,
    }
    sub_msg = json.dumps({"op": "subscribe", "schedule_id": schedule_id, "seats": True}).encode()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        slow_every = round(1 / slow_frac) if slow_frac else 0
        for i in range(count):
            sample = i % sample_every == 0
            slow = bool(slow_every) and i % slow_every == slow_every - 1 and not sample
            await loop.create_connection(
                functools.partial(WSClient, shared, sub_msg, sample, slow, port), "127.0.0.1", port
            )
            if i % 200 == 199:
                await asyncio.sleep(0.05)
        while shared["snapshots"] < count:  # noqa: ASYNC110  (counted by the protocols)
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        t_a, t_b = (float(x) for x in line.split())
        lo, hi = int(t_a * 10), int(t_b * 10)
        delivered = sum(c for b, c in shared["buckets"].items() if lo <= b < hi)
        out = {
            "delivered": delivered,
            "arrivals": shared["arrivals"],
            "frame": shared["frame"].decode() if shared["frame"] else None,
        }
        print(json.dumps(out), flush=True)

    uvloop.run(main())


# ---- coordinator ---------------------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _wait_line(proc: subprocess.Popen[str], expect: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited waiting for {expect!r}")
        if line.strip() == expect:
            return
    raise RuntimeError(f"timeout waiting for {expect!r}")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _open_schedule(prefix: str, schedule_id: str, n_seats: int) -> list[str]:
    import redis.asyncio as aioredis

    from kai_inventory.engine.inventory import Inventory
    from kai_inventory.engine.keys import Keys
    from kai_inventory.engine.layout import Layout

    day = 86_400_000
    now = int(time.time() * 1000)
    per_car = 80
    coaches = [
        (c + 1, "economy", [f"{r}{s}" for r in range(1, 21) for s in "ABCD"])
        for c in range(n_seats // per_car)
    ]
    layout = Layout.build(
        schedule_id, ["GMR", "CN", "YK"], [now + day, now + day + 1, now + 2 * day], coaches
    )
    client = aioredis.from_url(REDIS_URL)
    inv = Inventory(client, Keys(prefix))
    await inv.load_scripts()
    await inv.open(layout)
    await client.aclose()
    return list(layout.seat_ids)


async def _drive(
    prefix: str, schedule_id: str, rate: float, seconds: float, seat_ids: list[str]
) -> dict[str, float]:
    import redis.asyncio as aioredis

    from kai_inventory.engine.inventory import HoldRequest, Inventory
    from kai_inventory.engine.keys import Keys

    client = aioredis.from_url(REDIS_URL)
    inv = Inventory(client, Keys(prefix))
    await inv.load_scripts()
    sent: dict[str, float] = {}
    period = 1.0 / rate
    start = time.monotonic()
    pending: set[asyncio.Task[Any]] = set()

    async def one(k: int) -> None:
        sent[seat_ids[k]] = time.time()
        await inv.hold(
            HoldRequest(schedule_id=schedule_id, user=f"u{k}", a=0, b=2, ttl_ms=600_000, seats=[k])
        )

    k = 0
    while time.monotonic() - start < seconds and k < len(seat_ids):
        task = asyncio.create_task(one(k))
        pending.add(task)
        task.add_done_callback(pending.discard)
        k += 1
        await asyncio.sleep(max(0.0, start + k * period - time.monotonic()))
    await asyncio.gather(*pending)
    await client.aclose()
    return sent


async def _cleanup(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i : i + 500])
    await client.aclose()


def one_run(
    subs: int, window: int, seconds: float, rate: float, procs: int, sample: int, slow: float
) -> dict[str, Any]:
    prefix = "bench" + secrets.token_hex(4)
    schedule_id = "BENCH-1"
    n_seats = max(800, int(rate * (seconds + 3)) // 80 * 80 + 80)
    seat_ids = asyncio.run(_open_schedule(prefix, schedule_id, n_seats))
    port = free_port()
    server = _spawn(["server", str(port), prefix, str(window)])
    clients: list[subprocess.Popen[str]] = []
    try:
        _wait_line(server, "listening")
        per = [subs // procs + (1 if i < subs % procs else 0) for i in range(procs)]
        clients = [
            _spawn(["clients", str(port), str(n), str(sample), str(slow), schedule_id]) for n in per
        ]
        for c in clients:
            _wait_line(c, "ready", timeout=300)
        time.sleep(1.0)
        cpu0 = _cpu_seconds(server.pid)
        t_a = time.time()
        sent = asyncio.run(_drive(prefix, schedule_id, rate, seconds, seat_ids))
        time.sleep(max(0.5, window / 1000 * 3))
        t_b = time.time()
        cpu = _cpu_seconds(server.pid) - cpu0
        results = []
        for c in clients:
            assert c.stdin is not None
            assert c.stdout is not None
            c.stdin.write(f"{t_a} {t_b}\n")
            c.stdin.flush()
            results.append(json.loads(c.stdout.readline()))
    finally:
        for c in clients:
            _stop(c)
        _stop(server)
        asyncio.run(_cleanup(prefix))
    delivered = sum(r["delivered"] for r in results)
    lat = [t - sent[s] for r in results for s, t in r["arrivals"] if s in sent]
    frame = next((r["frame"] for r in results if r["frame"]), None)
    span = t_b - t_a
    return {
        "subs": subs,
        "window": window,
        "slow": slow,
        "seconds": span,
        "delivered": delivered,
        "per_s": delivered / span,
        "per_conn_rate": delivered / span / max(1, subs),
        "p50": _pct(lat, 0.5),
        "p99": _pct(lat, 0.99),
        "samples": len(lat),
        "cpu": cpu,
        "cpu_per_1000": cpu / max(1, delivered) * 1000,
        "frame": frame,
    }


def bare_run(subs: int, rate: float, frame: str, seconds: float, procs: int) -> dict[str, Any]:
    port = free_port()
    frame_file = ROOT / "var" / f"bench-frame-{os.getpid()}.json"
    frame_file.parent.mkdir(exist_ok=True)
    frame_file.write_text(frame)
    server = _spawn(["bare", str(port), str(frame_file), str(rate)])
    clients: list[subprocess.Popen[str]] = []
    try:
        _wait_line(server, "listening")
        per = [subs // procs + (1 if i < subs % procs else 0) for i in range(procs)]
        clients = [_spawn(["clients", str(port), str(n), "1000000", "0", "BENCH-1"]) for n in per]
        for c in clients:
            _wait_line(c, "ready", timeout=300)
        assert server.stdin is not None
        server.stdin.write("go\n")
        server.stdin.flush()
        time.sleep(1.0)
        cpu0 = _cpu_seconds(server.pid)
        t_a = time.time()
        time.sleep(seconds)
        t_b = time.time()
        cpu = _cpu_seconds(server.pid) - cpu0
        results = []
        for c in clients:
            assert c.stdin is not None
            assert c.stdout is not None
            c.stdin.write(f"{t_a} {t_b}\n")
            c.stdin.flush()
            results.append(json.loads(c.stdout.readline()))
    finally:
        for c in clients:
            _stop(c)
        _stop(server)
        with contextlib.suppress(OSError):
            frame_file.unlink()
    delivered = sum(r["delivered"] for r in results)
    return {
        "delivered": delivered,
        "per_s": delivered / (t_b - t_a),
        "cpu": cpu,
        "cpu_per_1000": cpu / max(1, delivered) * 1000,
    }


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "server":
        run_service(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return 0
    if mode == "bare":
        run_bare(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
        return 0
    if mode == "clients":
        run_clients(
            int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
        )
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subs", type=int, action="append")
    parser.add_argument("--window", type=int, action="append")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=100.0, help="holds per second")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--sample", type=int, default=20, help="1 in SAMPLE connections decodes JSON for latency"
    )
    parser.add_argument(
        "--slow", type=float, default=0.0, help="fraction of connections that stop reading"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-loop floor")
    args = parser.parse_args()
    subs_list = args.subs or [1000, 2000, 5000]
    windows = args.window or [50, 200]
    print(
        f"{'subs':>5} {'win':>4} {'slow':>4} {'upd/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu s/1k':>9} {'floor':>9} {'ratio':>6}  samples",
        flush=True,
    )
    for subs in subs_list:
        for window in windows:
            r = one_run(subs, window, args.seconds, args.rate, args.procs, args.sample, args.slow)
            floor = ratio = float("nan")
            if not args.no_floor and r["frame"] and r["per_conn_rate"] > 0:
                b = bare_run(subs, r["per_conn_rate"], r["frame"], args.seconds, args.procs)
                floor = b["cpu_per_1000"]
                ratio = r["cpu_per_1000"] / floor if floor else float("nan")
            print(
                f"{subs:>5} {window:>4} {args.slow:>4.2f} {r['per_s']:>8.0f} "
                f"{r['p50'] * 1000:>7.1f} {r['p99'] * 1000:>7.1f} {r['cpu_per_1000']:>9.4f} "
                f"{floor:>9.4f} {ratio:>6.2f}  {r['samples']}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
