"""A concurrent HTTP workload of holds, confirms, releases and cancels, recording the history.

``Workload(base_url, schedules, secret).run(duration_s)`` starts ``tasks`` client tasks; each
loops over *journeys*: a random user (of ``users``) holds 1-2 seats on a random journey of a
random schedule (by seat ids or by class and count, always with an ``Idempotency-Key``), then
confirms (sometimes twice: an idempotent retry), confirms and cancels, releases, or abandons
the hold to expire. Transport errors and 5xx are retried the way a careful client would: the
hold with the same key and body, the confirm while the hold may still be valid. Every request
attempt becomes one :class:`Record` in ``history`` (time sent/answered, status or the
transport error, body), which the invariant checker (``invariants.py``) reads.
Connections are not reused (``force_close``), so requests spread over the server's workers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import secrets
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kai_inventory.api.auth import issue_token

HOLD_SCOPE = "inventory:hold"


@dataclass
class ScheduleSpec:
    schedule_id: str
    stations: list[str]
    seats: list[str]  # seat ids "<car>-<label>"
    classes: list[str]


@dataclass
class Record:
    op: str  # hold | confirm | release | cancel
    user: str
    schedule_id: str
    t0: float  # time.time() when sent
    t1: float  # when answered or failed
    status: int | None  # None: transport error or client timeout
    error: str | None = None
    body: Any = None
    key: str | None = None  # Idempotency-Key of a hold
    hold_id: str | None = None
    booking: str | None = None
    retry_after: str | None = None
    request: Any = None


@dataclass
class Workload:
    base_url: str
    schedules: list[ScheduleSpec]
    secret: str
    tasks: int = 20
    users: int = 150
    seed: int = 1
    request_timeout_s: float = 5.0
    short_ttl_s: int = 2
    long_ttl_s: int = 20
    think_s: float = 0.02
    history: list[Record] = field(default_factory=list)
    expiring: list[tuple[str, float]] = field(default_factory=list)  # abandoned (hold, expires)
    sold: list[tuple[str, str, str]] = field(default_factory=list)  # (booking, user, schedule)
    _tokens: dict[str, str] = field(default_factory=dict)

    # --- plumbing ---------------------------------------------------------------------------

    def _auth(self, user: str) -> dict[str, str]:
        tok = self._tokens.get(user)
        if tok is None:
            tok = issue_token(self.secret, user, HOLD_SCOPE, 3600)
            self._tokens[user] = tok
        return {"Authorization": f"Bearer {tok}"}

    async def _call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        record: Record,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Record:
        record.t0 = time.time()
        record.request = json
        try:
            async with session.request(
                method,
                self.base_url + path,
                json=json,
                headers={**self._auth(record.user), **(headers or {})},
            ) as response:
                record.status = response.status
                record.retry_after = response.headers.get("Retry-After")
                try:
                    record.body = await response.json(content_type=None)
                except (ValueError, aiohttp.ClientError):
                    record.body = None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            record.status = None
            record.error = type(exc).__name__
        record.t1 = time.time()
        self.history.append(record)
        return record

    @staticmethod
    def _transient(r: Record) -> bool:
        return r.status is None or r.status >= 500

    # --- journeys ---------------------------------------------------------------------------

    async def _journey(self, session: aiohttp.ClientSession, rng: random.Random) -> None:
        if self.sold and rng.random() < 0.15:  # churn: an earlier booking is cancelled
            old, owner, schedule = self.sold.pop(rng.randrange(len(self.sold)))
            spec = next(s for s in self.schedules if s.schedule_id == schedule)
            await self._cancel(session, owner, spec, old)
            return
        user = f"chaos-{rng.randrange(self.users)}"
        spec = rng.choice(self.schedules)
        a = rng.randrange(len(spec.stations) - 1)
        b = rng.randrange(a + 1, len(spec.stations))
        action = rng.random()
        abandon = action >= 0.85
        ttl = self.short_ttl_s if abandon else self.long_ttl_s
        body: dict[str, Any] = {
            "schedule_id": spec.schedule_id,
            "from": spec.stations[a],
            "to": spec.stations[b],
            "ttl_s": ttl,
        }
        if rng.random() < 0.6:
            body["seats"] = rng.sample(spec.seats, rng.choice((1, 1, 2)))
        else:
            body["class"] = rng.choice(spec.classes)
            body["count"] = rng.choice((1, 1, 2))
        key = secrets.token_hex(8)
        held: Record | None = None
        for attempt in range(4):
            r = await self._call(
                session,
                "POST",
                "/v1/holds",
                Record("hold", user, spec.schedule_id, 0, 0, None, key=key),
                json=body,
                headers={"Idempotency-Key": key},
            )
            if r.status == 201:
                held = r
                r.hold_id = r.body["hold_id"]
                break
            if not self._transient(r):
                return
            await asyncio.sleep(0.2 + 0.2 * attempt)
        if held is None:
            return
        hold_id: str = held.body["hold_id"]
        seats: list[str] = held.body["seats"]
        expires = held.t0 + ttl  # a bound: the server's expires_at is not later than this
        if abandon:
            self.expiring.append((hold_id, expires))
            return
        if action < 0.70:
            booking = await self._confirm(session, user, spec, hold_id, seats, expires, rng)
            if booking is not None and action >= 0.55:
                await self._cancel(session, user, spec, booking)
            elif booking is not None:
                self.sold.append((booking, user, spec.schedule_id))
        else:
            await self._release(session, user, spec, hold_id)

    async def _confirm(
        self,
        session: aiohttp.ClientSession,
        user: str,
        spec: ScheduleSpec,
        hold_id: str,
        seats: list[str],
        expires: float,
        rng: random.Random,
    ) -> str | None:
        payload = {
            "passengers": [
                {"name": f"P {i}", "id_number": f"3174{i:012d}", "type": "adult", "seat": s}
                for i, s in enumerate(seats)
            ],
            "payment": {"method": "qris", "reference": "PG-" + hold_id[-6:], "amount": "100"},
        }
        booking: str | None = None
        attempt = 0
        while True:
            r = await self._call(
                session,
                "POST",
                f"/v1/holds/{hold_id}/confirm",
                Record("confirm", user, spec.schedule_id, 0, 0, None, hold_id=hold_id),
                json=payload,
            )
            if r.status in (200, 201):
                booking = r.booking = r.body["booking_number"]
                break
            # a client retries a confirm whose outcome it does not know while it may matter:
            # until a little after the hold's expiry (a committed booking is then still returned)
            if not self._transient(r) or time.time() > expires + 3 or attempt > 20:
                return None
            attempt += 1
            await asyncio.sleep(min(1.0, 0.2 * attempt))
        if rng.random() < 0.15:  # an idempotent retry of a confirm that succeeded
            r = await self._call(
                session,
                "POST",
                f"/v1/holds/{hold_id}/confirm",
                Record("confirm", user, spec.schedule_id, 0, 0, None, hold_id=hold_id),
                json=payload,
            )
            if r.status in (200, 201):
                r.booking = r.body["booking_number"]
        return booking

    async def _cancel(
        self, session: aiohttp.ClientSession, user: str, spec: ScheduleSpec, booking: str
    ) -> None:
        for attempt in range(4):
            r = await self._call(
                session,
                "POST",
                f"/v1/bookings/{booking}/cancel",
                Record("cancel", user, spec.schedule_id, 0, 0, None, booking=booking),
            )
            if not self._transient(r):
                return
            await asyncio.sleep(0.2 + 0.2 * attempt)

    async def _release(
        self, session: aiohttp.ClientSession, user: str, spec: ScheduleSpec, hold_id: str
    ) -> None:
        for attempt in range(4):
            r = await self._call(
                session,
                "DELETE",
                f"/v1/holds/{hold_id}",
                Record("release", user, spec.schedule_id, 0, 0, None, hold_id=hold_id),
            )
            if not self._transient(r):
                return
            await asyncio.sleep(0.2 + 0.2 * attempt)

    # --- running ----------------------------------------------------------------------------

    async def run(self, duration_s: float, stop: asyncio.Event | None = None) -> None:
        """Run journeys from ``tasks`` tasks until ``duration_s`` passed (or ``stop`` is set);
        journeys under way finish."""
        stop = stop or asyncio.Event()
        deadline = time.monotonic() + duration_s
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)

        async def client(i: int) -> None:
            rng = random.Random(self.seed * 1_000 + i)
            while time.monotonic() < deadline and not stop.is_set():
                await self._journey(session, rng)
                await asyncio.sleep(rng.random() * self.think_s)

        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(client(i) for i in range(self.tasks)))

    # --- summary ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        statuses = Counter(
            f"{r.op}:{r.status if r.status is not None else r.error}" for r in self.history
        )
        errors = sum(1 for r in self.history if r.status is None or r.status >= 500)
        latencies = sorted(r.t1 - r.t0 for r in self.history)
        return {
            "operations": len(self.history),
            "client_errors": errors,
            "statuses": dict(sorted(statuses.items())),
            "confirmed": len({r.hold_id for r in self.history if r.op == "confirm" and r.booking}),
            "max_latency_s": round(latencies[-1], 3) if latencies else 0.0,
        }


@dataclass
class WsWatcher:
    """``count`` WebSocket clients, each subscribed to every schedule's whole route; they
    record every frame (with the time received) and reconnect when the server goes away."""

    base_url: str
    schedules: list[ScheduleSpec]
    count: int = 4
    spread: bool = False  # each client subscribes to one schedule (round robin), not to all
    frames: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    connections: dict[int, str] = field(default_factory=dict)  # client -> its current connection

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(self._client(session, stop, i) for i in range(self.count)))

    async def _client(self, session: aiohttp.ClientSession, stop: asyncio.Event, n: int) -> None:
        url = self.base_url.replace("http://", "ws://") + "/v1/ws"
        attempt = 0
        while not stop.is_set():
            attempt += 1
            conn = f"{n}.{attempt}"
            self.connections[n] = conn
            try:
                async with session.ws_connect(url, heartbeat=None) as ws:
                    chosen = (
                        [self.schedules[n % len(self.schedules)]] if self.spread else self.schedules
                    )
                    for spec in chosen:
                        await ws.send_json({"op": "subscribe", "schedule_id": spec.schedule_id})
                    while not stop.is_set():
                        try:
                            msg = await ws.receive(timeout=0.5)
                        except TimeoutError:
                            continue
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        frame = msg.json()
                        frame["_t"] = time.time()
                        frame["_c"] = conn
                        if "sub" in frame:  # sub ids are per connection: make them unique
                            frame["sub"] = f"{conn}/{frame['sub']}"
                        self.frames.append(frame)
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            if not stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(0.3)

    def live_subs(self) -> dict[str, str]:
        """sub -> schedule, for the subscriptions of each client's current connection."""
        current = set(self.connections.values())
        return {
            f["sub"]: f["schedule_id"]
            for f in self.frames
            if f.get("type") == "subscribed" and f["_c"] in current
        }

    def latest(self) -> dict[str, dict[str, Any]]:
        """sub -> its last snapshot/update."""
        last: dict[str, dict[str, Any]] = {}
        for frame in self.frames:
            if frame.get("type") in ("snapshot", "update"):
                last[frame["sub"]] = frame
        return last


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def silent_subscriber(host: str, port: int, schedule_id: str) -> socket.socket:
    """A WebSocket client that upgrades, subscribes, and then never reads a byte (a tiny
    receive buffer, so the server's side fills up fast). Close the returned socket to end it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    subscribe = json.dumps({"op": "subscribe", "schedule_id": schedule_id}).encode()
    await loop.sock_sendall(sock, handshake + _masked_text_frame(subscribe))
    return sock
