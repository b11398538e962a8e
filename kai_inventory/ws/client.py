"""One WebSocket connection: its subscriptions, its bounded queue and its writer task.

The fan-out never awaits a socket. A frame for a client that keeps up is written straight
into its transport's buffer (non-blocking, a WebSocket text frame built here: server frames
are unmasked, so the header is two to ten bytes in front of the payload). Only when the
transport's buffer is over ``DIRECT_LIMIT`` (the peer reads slower than we write) do frames go
to the connection's bounded queue, which its writer task drains as the buffer empties. So one
stalled client never delays the others, and a client that keeps up costs one
``transport.write`` per frame and no task switch.

When the queue is full, the queued updates are dropped and the affected subscriptions are
marked for a resync: their next message is a fresh snapshot (sent once the client drains). A
client that makes no progress for ``SLOW_DEADLINE_S`` while it has frames queued is closed by
the hub's watchdog.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from kai_inventory import metrics

if TYPE_CHECKING:
    from kai_inventory.ws.hub import Subscription

QUEUE_LIMIT = 64
SLOW_DEADLINE_S = 5.0
DIRECT_LIMIT = 256 * 1024  # transport buffer size up to which frames are written directly
_DRAIN_POLL_S = 0.01

_UPDATE = 0
_OTHER = 1

SENT = {
    kind: metrics.WS_MESSAGES.labels(kind)
    for kind in ("snapshot", "update", "schedule_status", "queue", "other")
}

_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack


def frame_header(n: int) -> bytes:
    """The header of one unmasked, final WebSocket text frame of ``n`` bytes (RFC 6455 5.2)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return _LEN16(0x81, 126, n)
    return _LEN64(0x81, 127, n)


def text_frame(payload: bytes) -> bytes:
    return frame_header(len(payload)) + payload


Entry = tuple[int, bytes, str, float, "Subscription | None"]


class Client:
    __slots__ = (
        "_closed",
        "_on_resync",
        "_queue",
        "_wake",
        "_writer",
        "authenticated",
        "conn_id",
        "holder",
        "last_progress",
        "queue_limit",
        "sub_seq",
        "subs",
        "transport",
        "user",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        conn_id: int,
        on_resync: Callable[[list[Subscription]], None],
        queue_limit: int = QUEUE_LIMIT,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.conn_id = conn_id
        self.queue_limit = queue_limit
        self.subs: dict[str, Subscription] = {}
        self.sub_seq = 0
        self.user: str | None = None
        self.holder = False  # the token may hold (inventory:hold or admin): the queue needs it
        self.authenticated = False
        self.last_progress = time.monotonic()
        self._queue: collections.deque[Entry] = collections.deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._on_resync = on_resync
        self._closed = False

    # ---- sending (never awaits) -------------------------------------------------------------

    def _direct(self) -> asyncio.Transport | None:
        """The transport when a frame may be written straight away, else None."""
        t = self.transport
        if (
            t is None
            or self._queue
            or t.is_closing()
            or t.get_write_buffer_size() > DIRECT_LIMIT
            or self.ws.closed
        ):
            return None
        return t

    def push_update(self, sub: Subscription, payload: bytes, t0: float) -> bool:
        """Send or queue one update; True when it was written directly (metrics: caller's)."""
        if self._closed:
            return False
        t = self._direct()
        if t is not None:
            t.write(text_frame(payload))
            return True
        if len(self._queue) >= self.queue_limit:
            self._overflow(sub)
            return False
        self._enqueue((_UPDATE, payload, "update", t0, sub))
        return False

    def send(self, payload: bytes, kind: str = "other") -> None:
        """Send a control frame (subscribed, snapshot, status, pong, error): never dropped."""
        if self._closed:
            return
        t = self._direct()
        if t is not None:
            t.write(text_frame(payload))
            SENT[kind].inc()
            return
        self._enqueue((_OTHER, payload, kind, 0.0, None))

    def _enqueue(self, entry: Entry) -> None:
        if not self._queue:
            self.last_progress = time.monotonic()
        self._queue.append(entry)
        self._wake.set()

    def _overflow(self, sub: Subscription) -> None:
        dropped = 0
        stale: dict[str, Subscription] = {sub.sub_id: sub}
        kept: collections.deque[Entry] = collections.deque()
        for entry in self._queue:
            if entry[0] == _UPDATE and entry[4] is not None:
                dropped += 1
                stale[entry[4].sub_id] = entry[4]
            else:
                kept.append(entry)
        self._queue = kept
        metrics.WS_DROPPED.inc(dropped + 1)
        for s in stale.values():
            s.resync = True
        # the snapshots are sent once the queue has drained (see _write_loop)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def backlogged(self) -> bool:
        """True while frames wait in the queue: a resync snapshot would only add to it."""
        return bool(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- writer (the backlog only) ----------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.conn_id}")

    async def _write_loop(self) -> None:
        observe = metrics.WS_PUSH_LAG.observe
        try:
            while True:
                if not self._queue:
                    owed = [s for s in self.subs.values() if s.resync]
                    if owed:
                        self._on_resync(owed)
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                t = self.transport
                if t is None or t.is_closing():
                    self._closed = True
                    return
                if t.get_write_buffer_size() > DIRECT_LIMIT:
                    size = t.get_write_buffer_size()
                    await asyncio.sleep(_DRAIN_POLL_S)
                    if t.get_write_buffer_size() < size:
                        self.last_progress = time.monotonic()
                    continue
                _kind, payload, name, t0, _sub = self._queue.popleft()
                t.write(text_frame(payload))
                self.last_progress = time.monotonic()
                SENT[name].inc()
                if t0:
                    observe(time.time() - t0)
        except (ConnectionError, RuntimeError):
            self._closed = True

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        """Stop writing and close the socket (aborts the transport if the close handshake hangs)."""
        self._closed = True
        await self.stop_writer()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), timeout=1.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def abort(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
        if self.transport is not None:
            self.transport.abort()

    async def stop_writer(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
