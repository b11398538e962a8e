"""Live queue position over the WebSocket: ``{"op": "queue", "sale_id": ...}``.

The op joins the sale's queue for the connection's user (idempotent, like ``POST .../queue``)
and then streams ``{"type": "queue", "position", "ahead", "estimated_wait_s"}`` at most once a
second while it changes, then ``{"type": "admitted", "admission_token", "admission_expires_at"}``.

Cheap by construction (see docs/WAITING_ROOM.md):
- Once the sale is open a waiting user's ``base = ahead + popped`` is fixed (admission pops the
  head, joiners go to the tail), so one ``queue_watch`` call per sale per tick reads ``popped``
  and gives every watcher's position; only users near the head (who may have been admitted)
  or not yet open (pre-opening places still move) are looked up one by one.
- Positions are shown in buckets (exact up to 100, then to 10, 100, 1000, rounded up: never
  better than the truth); clients in the same bucket share one encoded frame per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from kai_inventory.engine.waiting_room import QCode, WaitingRoom, estimate_wait_s

if TYPE_CHECKING:
    from kai_inventory.ws.client import Client

log = logging.getLogger(__name__)

TICK_S = 0.25
MIN_GAP_S = 1.0  # at most one position frame per second per client
REFRESH_S = 10.0  # re-read every base this often (self-healing)


class QueueOp(msgspec.Struct, tag_field="op", tag="queue", forbid_unknown_fields=True):
    sale_id: str


class QueuePosition(msgspec.Struct, tag_field="type", tag="queue"):
    position: int
    ahead: int
    estimated_wait_s: int


class Admitted(msgspec.Struct, tag_field="type", tag="admitted"):
    admission_token: str
    admission_expires_at: str


class QueueError(msgspec.Struct, tag_field="type", tag="error"):
    code: str
    message: str
    sale_id: str


_ENCODE = msgspec.json.Encoder().encode


def bucket(position: int) -> int:
    """The shown position: exact to 100, then rounded up to 10, 100, 1000."""
    if position <= 100:
        return position
    step = 10 if position <= 1000 else 100 if position <= 10_000 else 1000
    return math.ceil(position / step) * step


def _rfc3339(epoch_ms: int) -> str:
    import datetime as dt

    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(slots=True)
class _Watch:
    client: Client
    user: str
    base: int
    based_at: float
    last_key: tuple[int, int] | None = None
    last_sent: float = 0.0


class QueueWatcher:
    """Per process: sale -> watching connections; one loop polls each sale every tick."""

    def __init__(self, room: WaitingRoom, tick_s: float = TICK_S) -> None:
        self.room = room
        self.tick_s = tick_s
        self.sales: dict[str, dict[int, _Watch]] = {}
        self._popped: dict[str, int] = {}
        self._rate: dict[str, int] = {}

    async def watch(self, client: Client, sale_id: str) -> None:
        user = client.user
        if user is None:
            client.send(_ENCODE(QueueError("unauthorized", "the queue needs a token", sale_id)))
            return
        if not client.holder:  # as POST /v1/sales/{id}/queue
            detail = "the queue needs a token with the scope inventory:hold"
            client.send(_ENCODE(QueueError("forbidden", detail, sale_id)))
            return
        place = await self.room.join(sale_id, user)
        if place.code != QCode.OK:
            code = {QCode.SALE_NOT_FOUND: "sale_not_found", QCode.SALE_NOT_OPEN: "sale_not_open"}
            client.send(
                _ENCODE(QueueError(code.get(place.code, "not_admitted"), place.code.name, sale_id))
            )
            return
        if place.admitted:
            self._send_admitted(client, sale_id, user, place.serial, place.admission_expires_ms)
            return
        watch = _Watch(client, user, place.base, time.monotonic())
        self.sales.setdefault(sale_id, {})[client.conn_id] = watch
        self._popped[sale_id] = max(self._popped.get(sale_id, 0), place.popped)
        self._rate[sale_id] = place.admit_per_s
        self._maybe_send(watch, place.ahead, place.admit_per_s, place.opens_ms, place.now_ms, {})

    def _send_admitted(
        self, client: Client, sale_id: str, user: str, serial: int, expires_ms: int
    ) -> None:
        token = self.room.tokens.mint(user, sale_id, serial, expires_ms)
        client.send(_ENCODE(Admitted(token, _rfc3339(expires_ms))), "queue")

    def _maybe_send(
        self,
        w: _Watch,
        ahead: int,
        rate: int,
        opens_ms: int,
        now_ms: int,
        frames: dict[tuple[int, int], bytes],
    ) -> None:
        shown = bucket(ahead + 1)
        eta = estimate_wait_s(shown - 1, rate, opens_ms, now_ms)
        key = (shown, eta)
        now = time.monotonic()
        if key == w.last_key or now - w.last_sent < MIN_GAP_S:
            return
        frame = frames.get(key)
        if frame is None:  # one encode per bucket per tick, shared by every client in it
            frame = frames[key] = _ENCODE(QueuePosition(shown, shown - 1, eta))
        w.client.send(frame, "queue")
        w.last_key, w.last_sent = key, now

    async def poll(self, sale_id: str) -> None:
        """One tick for one sale: read ``popped`` (and the few users who need a look-up)."""
        watches = self.sales.get(sale_id, {})
        for conn_id in [c for c, w in watches.items() if w.client.closed]:
            del watches[conn_id]
        if not watches:
            self.sales.pop(sale_id, None)
            return
        now = time.monotonic()
        popped = self._popped.get(sale_id, 0)
        near = max(1, int(self._rate.get(sale_id, 1) * max(self.tick_s, 0.5) * 2))
        check = [
            w for w in watches.values() if w.base - popped <= near or now - w.based_at >= REFRESH_S
        ]
        result = await self.room.watch(sale_id, [w.user for w in check])
        if result.code != QCode.OK:
            for w in watches.values():
                w.client.send(_ENCODE(QueueError("sale_not_found", "sale gone", sale_id)))
            self.sales.pop(sale_id, None)
            return
        before_opening = result.now_ms < result.opens_ms
        if before_opening and len(check) < len(watches):  # pre-opening places still move
            check = list(watches.values())
            result = await self.room.watch(sale_id, [w.user for w in check])
        self._popped[sale_id] = result.popped
        self._rate[sale_id] = result.admit_per_s
        for w, seen in zip(check, result.users, strict=True):
            if seen.rank == -2:
                self._send_admitted(w.client, sale_id, w.user, seen.serial, seen.expires_ms)
                watches.pop(w.client.conn_id, None)
            elif seen.rank == -1:
                w.client.send(
                    _ENCODE(QueueError("not_admitted", "your place was returned", sale_id))
                )
                watches.pop(w.client.conn_id, None)
            else:
                w.base, w.based_at = seen.rank + result.popped, now
        frames: dict[tuple[int, int], bytes] = {}
        for w in watches.values():
            ahead = max(0, w.base - result.popped)
            self._maybe_send(w, ahead, result.admit_per_s, result.opens_ms, result.now_ms, frames)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for sale_id in list(self.sales):
                try:
                    await self.poll(sale_id)
                except (OSError, RedisError, TimeoutError) as exc:
                    log.warning("queue watch of %s failed (retrying): %s", sale_id, exc)
                except Exception:  # never let one bad round end the loop for every watcher
                    log.exception("queue watch of %s failed", sale_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.tick_s)


QUEUE_WATCHER = web.AppKey("kai_queue_watcher", QueueWatcher)


async def _watcher_ctx(app: web.Application) -> AsyncIterator[None]:
    from kai_inventory.api.waiting_room import WAITING_ROOM

    room = app.get(WAITING_ROOM)
    if room is None:  # an app without the waiting room (some ws tests)
        yield
        return
    watcher = QueueWatcher(room)
    app[QUEUE_WATCHER] = watcher
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop), name="queue-watch")
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=5)


def setup_queue_watch(app: web.Application) -> None:
    app.cleanup_ctx.append(_watcher_ctx)
