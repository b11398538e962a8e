"""The fan-out: Redis change events in, coalesced journey-aware updates out.

Per process, each schedule with local subscribers has one broker subscription (a
:class:`~kai_inventory.ws.hub.Feed`). An event marks the feed dirty, remembering the leg
ranges it touched (a cheap pre-filter: views whose legs don't overlap are skipped). A
coalescing tick fires about ``coalesce_ms`` after the first mark and makes ONE
``Inventory.snapshot`` for the schedule; then, per distinct view, it computes the journey's
class counts and seat masks, diffs them against the view's last state and, if anything
changed, encodes ONE update body. Each subscription's frame is that body with its own
``{"type":"update","sub":"<id>",`` head spliced in front (a bytes concatenation, no JSON
work per subscriber); frames are only enqueued, never awaited.

The window is a delivery deadline, not a start time (a choice where the contract's "sent
within KAI_WS_COALESCE_MS (plus processing)" is silent): writing one tick to thousands of
subscribers takes tens of milliseconds (about 60 ms for 5,000 on two cores), and the last
subscriber's frame should leave about when the window ends, not that long after. So a feed
remembers how long its recent ticks took from firing to their last frame written
(``Feed.tick_s``, an EWMA over ticks that sent frames) and fires that much early,
``first event + window - min(tick_s, window / 4)`` (see :func:`tick_delay`). The cap keeps
at least three quarters of the window for merging changes, whatever a stalled tick
measured; a small feed's tick takes about a millisecond, so its timing is unchanged in effect.

Lost events: a version gap in the events, a broker reconnect, or a client queue overflow
makes the affected subscriptions receive a fresh snapshot in place of updates.

Push lag is measured from the receipt of the first event of a tick (``time.time()``; the
events carry no commit timestamp, and receipt trails the commit by the Redis publish hop,
well under a millisecond on one host) to the frame written to the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec
from redis.exceptions import RedisError

from kai_inventory import metrics
from kai_inventory.engine.layout import Layout
from kai_inventory.engine.views import (
    ClassAvailability,
    Snapshot,
    availability,
    journey_masks,
    seat_states,
)
from kai_inventory.ws import protocol
from kai_inventory.ws.broker import Broker
from kai_inventory.ws.client import DIRECT_LIMIT, SENT, Client, frame_header
from kai_inventory.ws.hub import Feed, Hub, Subscription, View

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 20
FEED_LINGER_S = 2.0  # an empty feed keeps its broker subscription this long (resubscribe churn)
WATCHDOG_INTERVAL_S = 0.5
TICK_EWMA_WEIGHT = 0.25  # weight of the newest tick duration in Feed.tick_s


class InventoryReader(Protocol):
    """What the fan-out needs from ``engine.inventory.Inventory``."""

    async def snapshot(self, schedule_id: str) -> Snapshot | None: ...

    async def layout(self, schedule_id: str) -> Layout | None: ...


class Event(msgspec.Struct):
    """A change event as the Lua scripts publish it (see DESIGN.md, "Change events")."""

    v: int
    ch: list[tuple[int, int, list[int]]] | None = None
    st: str | None = None
    delay: int = 0
    reason: str = ""
    reset: int = 0


_EVENT_DECODER = msgspec.json.Decoder(Event)

SNAPSHOT_HEAD = b'{"type":"snapshot","sub":"'
_UPDATES_SENT = SENT["update"]


class SnapshotBody(msgspec.Struct, omit_defaults=True, rename={"from_": "from"}):
    schedule_id: str
    from_: str
    to: str
    version: int
    classes: list[ClassAvailability]
    seats: dict[str, str] | None = None


def tick_delay(window: float, tick_s: float, waited: float = 0.0) -> float:
    """Seconds until a feed's tick fires, ``waited`` seconds after its window's first event.

    The tick leads the window's end by the feed's recent tick duration ``tick_s``, at most
    by a quarter of the window, so its last frame leaves about when the window ends.
    """
    lead = min(max(tick_s, 0.0), window / 4)
    return max(0.0, window - lead - waited)


class Fanout:
    def __init__(
        self,
        inventory: InventoryReader,
        broker: Broker,
        hub: Hub,
        coalesce_ms: int,
        resolve_layout: Callable[[str], Awaitable[Layout | None]] | None = None,
    ) -> None:
        self.inventory = inventory
        self.broker = broker
        self.hub = hub
        self.window = coalesce_ms / 1000.0
        self._resolve_layout = resolve_layout or inventory.layout
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self._on_event, self._on_resubscribed)
        self._watchdog = asyncio.create_task(self._watch(), name="ws-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for feed in self.hub.feeds.values():
            if feed.timer is not None:
                feed.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.broker.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, client: Client, op: protocol.Subscribe) -> Subscription:
        if len(client.subs) >= MAX_SUBSCRIPTIONS:
            raise protocol.ProtocolError(
                "too_many_subscriptions",
                f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection",
            )
        layout = await self._resolve_layout(op.schedule_id)
        if layout is None:
            raise protocol.ProtocolError("schedule_not_found", f"no schedule {op.schedule_id}")
        from_code = op.from_ or layout.stops[0]
        to_code = op.to or layout.stops[-1]
        legs = layout.leg_range(from_code, to_code)
        if legs is None:
            raise protocol.ProtocolError(
                "invalid_request",
                f"{from_code} -> {to_code} is not a journey of {op.schedule_id} "
                "(unknown station, or from not before to)",
            )
        feed = await self._feed(op.schedule_id)
        snap = await self.inventory.snapshot(op.schedule_id)
        if snap is None:
            raise protocol.ProtocolError("schedule_not_found", f"no schedule {op.schedule_id}")
        if snap.layout_id != layout.layout_id:
            fresh = await self.inventory.layout(op.schedule_id)
            if fresh is None:
                raise protocol.ProtocolError("schedule_not_found", f"no schedule {op.schedule_id}")
            layout = fresh
            legs = layout.leg_range(from_code, to_code)
            if legs is None:
                raise protocol.ProtocolError("invalid_request", "the schedule's stops changed")
        if client.closed:
            raise protocol.ProtocolError("closed", "connection closing")
        if len(client.subs) >= MAX_SUBSCRIPTIONS:  # re-check after the awaits
            raise protocol.ProtocolError(
                "too_many_subscriptions",
                f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection",
            )
        client.sub_seq += 1
        sub = Subscription(
            client, f"s{client.sub_seq}", op.schedule_id, from_code, to_code, *legs, op.seats
        )
        feed = self.hub.feeds.get(op.schedule_id, feed)  # (the feed object is stable)
        self.hub.feeds[op.schedule_id] = feed
        view = self.hub.add_subscription(feed, sub)
        feed.empty_since = 0.0
        sold, taken = journey_masks(layout, snap, sub.a, sub.b)
        classes = availability(layout, snap, sub.a, sub.b)
        if view.version < 0:
            self._set_view(view, snap, classes, sold, taken)
        elif view.version > snap.version:
            # the view moved past our read while we awaited it: resync at the next tick
            sub.resync = True
            feed.pending.add(sub)
            self._mark(feed, ())
        feed.version_seen = max(feed.version_seen, snap.version)
        client.send(
            protocol.encode(
                protocol.Subscribed(sub.sub_id, sub.schedule_id, from_code, to_code, sub.seats)
            )
        )
        client.send(
            self._snapshot_frame(sub, self._snapshot_tail(layout, snap, sub, classes)), "snapshot"
        )
        sub.version = snap.version
        if snap.status != "scheduled":
            client.send(
                self._status_frame(snap.schedule_id, snap.status, snap.delay_minutes, snap.reason),
                "schedule_status",
            )
        return sub

    async def _feed(self, schedule_id: str) -> Feed:
        feed = self.hub.feeds.get(schedule_id)
        if feed is None:
            feed = self.hub.feeds[schedule_id] = Feed(schedule_id)
        if feed.ready is None:
            feed.ready = asyncio.get_running_loop().create_future()
            ready = feed.ready
            try:
                await self.broker.subscribe(schedule_id)
            except (RedisError, OSError, TimeoutError) as exc:
                feed.ready = None
                ready.set_exception(
                    protocol.ProtocolError("dependency_unavailable", "live updates unavailable")
                )
                ready.exception()  # consumed here; waiters re-raise it
                if not feed.views:
                    self.hub.feeds.pop(schedule_id, None)
                raise protocol.ProtocolError(
                    "dependency_unavailable", "live updates are unavailable, retry"
                ) from exc
            ready.set_result(None)
        else:
            await asyncio.shield(feed.ready)
        return feed

    def unsubscribe(self, client: Client, sub_id: str) -> None:
        sub = client.subs.get(sub_id)
        if sub is None:
            raise protocol.ProtocolError("subscription_not_found", f"no subscription {sub_id}")
        self._drop(sub)

    def drop_client(self, client: Client) -> None:
        for sub in list(client.subs.values()):
            self._drop(sub)
        self.hub.remove_client(client)

    def _drop(self, sub: Subscription) -> None:
        empty = self.hub.remove_subscription(sub)
        feed = self.hub.feeds.get(sub.schedule_id)
        if feed is not None:
            feed.pending.discard(sub)
        if empty is not None:
            empty.empty_since = time.monotonic()

    def resync(self, subs: list[Subscription]) -> None:
        """Owe these subscriptions a fresh snapshot (their client dropped queued updates)."""
        for sub in subs:
            feed = self.hub.feeds.get(sub.schedule_id)
            if feed is None or sub.client.subs.get(sub.sub_id) is not sub:
                continue
            sub.resync = True
            feed.pending.add(sub)
            self._mark(feed, ())

    # ---- events -----------------------------------------------------------------------------

    def _on_event(self, schedule_id: str, data: bytes) -> None:
        feed = self.hub.feeds.get(schedule_id)
        if feed is None:
            return
        try:
            event = _EVENT_DECODER.decode(data)
        except msgspec.MsgspecError:
            log.warning("ws: undecodable event on %s: %r", schedule_id, data[:200])
            self._mark(feed, None)
            return
        gap = feed.version_seen >= 0 and event.v > feed.version_seen + 1
        feed.version_seen = max(feed.version_seen, event.v)
        if event.st is not None:
            frame = self._status_frame(schedule_id, event.st, event.delay, event.reason)
            for client in self.hub.clients_of(schedule_id):
                client.send(frame, "schedule_status")
        if event.reset:
            self._mark(feed, None, "reset")
        elif gap:
            self._mark(feed, None, "gap")
        elif event.ch:
            self._mark(feed, [(a, b) for a, b, _seats in event.ch])

    def _on_resubscribed(self, schedule_ids: list[str]) -> None:
        for schedule_id in schedule_ids:
            feed = self.hub.feeds.get(schedule_id)
            if feed is not None:
                self._mark(feed, None, "reconnect")

    def _mark(
        self, feed: Feed, ranges: list[tuple[int, int]] | tuple[()] | None, resync: str = ""
    ) -> None:
        if ranges is None:
            feed.dirty_all = True
        else:
            feed.ranges.extend(ranges)
        if resync:
            feed.resync_all = resync
        if not feed.dirty:
            feed.dirty = True
            feed.first_event_at = time.time()
            if not feed.running and feed.timer is None:
                feed.timer = asyncio.get_running_loop().call_later(
                    tick_delay(self.window, feed.tick_s), self._fire, feed
                )

    def _fire(self, feed: Feed) -> None:
        feed.timer = None
        if self.hub.feeds.get(feed.schedule_id) is not feed:
            return
        feed.running = True
        self._spawn(self._tick(feed, time.perf_counter()))

    async def _tick(self, feed: Feed, fired: float) -> None:
        owed, pending = feed.resync_all, set(feed.pending)
        try:
            if await self._tick_once(feed):
                took = time.perf_counter() - fired
                feed.tick_s = (
                    took
                    if feed.tick_s <= 0.0
                    else feed.tick_s + TICK_EWMA_WEIGHT * (took - feed.tick_s)
                )
        except (RedisError, OSError) as exc:
            log.warning("ws: tick for %s failed (%s); retrying", feed.schedule_id, exc)
            feed.dirty_all = True
            feed.dirty = True
            # the failed tick still owes its snapshots (a resync after a gap must not
            # degrade into a plain diff when Redis was briefly unreachable)
            feed.resync_all = feed.resync_all or owed
            feed.pending |= pending
        except Exception:
            log.exception("ws: tick for %s failed", feed.schedule_id)
        finally:
            feed.running = False
        if feed.dirty and self.hub.feeds.get(feed.schedule_id) is feed and feed.timer is None:
            delay = tick_delay(self.window, feed.tick_s, time.time() - feed.first_event_at)
            feed.timer = asyncio.get_running_loop().call_later(delay, self._fire, feed)

    async def _tick_once(self, feed: Feed) -> int:
        """One tick; returns the number of frames sent (written or queued)."""
        ranges, check_all, resync = feed.ranges, feed.dirty_all, feed.resync_all
        t0 = feed.first_event_at
        pending = feed.pending
        feed.ranges, feed.dirty_all, feed.resync_all, feed.pending = [], False, "", set()
        feed.dirty = False
        schedule_id = feed.schedule_id
        snap = await self.inventory.snapshot(schedule_id)
        if snap is None:
            return 0
        layout = await self.inventory.layout(schedule_id)
        if layout is None:
            return 0
        if snap.layout_id != layout.layout_id:
            feed.dirty = feed.dirty_all = True  # layout cache behind: try again next tick
            feed.resync_all = "reset"
            return 0
        feed.version_seen = max(feed.version_seen, snap.version)
        if resync == "reset":
            self._rebind(feed, layout)
        pending_views = {s.view_key for s in pending}
        sent = 0
        for view in list(feed.views.values()):
            a, b, _seats = view.key
            if not (
                check_all
                or resync
                or view.key in pending_views
                or any(a < rb and ra < b for ra, rb in ranges)
            ):
                continue
            sent += self._tick_view(feed, view, layout, snap, t0, resync, pending)
        if resync:
            metrics.WS_RESYNCS.labels(resync).inc(sum(len(v.subs) for v in feed.views.values()))
        elif pending:
            metrics.WS_RESYNCS.labels("slow").inc(len(pending))
        return sent

    def _tick_view(
        self,
        feed: Feed,
        view: View,
        layout: Layout,
        snap: Snapshot,
        t0: float,
        resync: str,
        pending: set[Subscription],
    ) -> int:
        """Update one view's subscribers; returns the number of frames sent."""
        a, b, seats = view.key
        version = snap.version
        sold, taken = journey_masks(layout, snap, a, b)
        classes = availability(layout, snap, a, b)
        tail: bytes | None = None
        if version > view.version:
            changed_seats = ((sold ^ view.sold) | (taken ^ view.taken)) if seats else 0
            if changed_seats or classes != view.classes:
                seat_map: dict[str, str] | None = None
                if seats:
                    seat_map = _changed_states(layout, sold, taken, changed_seats)
                tail = protocol.update_tail(
                    protocol.UpdateBody(
                        schedule_id=feed.schedule_id,
                        version=version,
                        classes=classes,
                        seats=seat_map,
                    )
                )
            self._set_view(view, snap, classes, sold, taken)
        snapshot_tail: bytes | None = None
        direct = other = 0
        headers: dict[int, bytes] = {}  # WebSocket frame header by sub-head length
        for sub in view.subs:
            if resync or sub.resync:
                if sub.client.backlogged:
                    sub.resync = True  # sent by the client's writer once it has drained
                    continue
                if snapshot_tail is None:
                    snapshot_tail = self._snapshot_tail(layout, snap, sub, classes)
                sub.client.send(self._snapshot_frame(sub, snapshot_tail), "snapshot")
                sub.resync = False
                sub.version = version
                other += 1
            elif tail is not None and sub.version < version:
                sub.version = version
                client = sub.client
                t = client.transport
                # the hot path, inlined: a client that keeps up gets the frame written now
                if (
                    t is not None
                    and not client.backlogged
                    and not client.closed
                    and t.get_write_buffer_size() <= DIRECT_LIMIT
                    and not t.is_closing()
                ):
                    head = sub.head
                    header = headers.get(len(head))
                    if header is None:
                        header = headers[len(head)] = frame_header(len(head) + len(tail))
                    t.write(b"".join((header, head, tail)))
                    direct += 1
                else:
                    client.push_update(sub, sub.head + tail, t0)
                    other += 1
        if direct:
            # frames written straight to their sockets in this loop: counted at once, and
            # the lag observed once per view and tick, at its last frame (the worst case)
            _UPDATES_SENT.inc(direct)
            if t0:
                metrics.WS_PUSH_LAG.observe(time.time() - t0)
        return direct + other

    @staticmethod
    def _set_view(
        view: View, snap: Snapshot, classes: list[ClassAvailability], sold: int, taken: int
    ) -> None:
        view.version = snap.version
        view.layout_id = snap.layout_id
        view.classes = classes
        view.sold = sold
        view.taken = taken

    def _rebind(self, feed: Feed, layout: Layout) -> None:
        """The layout was (re)opened: re-derive every subscription's legs from its stations."""
        for view in list(feed.views.values()):
            for sub in list(view.subs):
                legs = layout.leg_range(sub.from_code, sub.to_code)
                feed.remove(sub)
                if legs is None:
                    sub.client.subs.pop(sub.sub_id, None)
                    metrics.WS_SUBSCRIPTIONS.dec()
                    sub.client.send(
                        protocol.error_frame(
                            "subscription_ended",
                            f"{sub.sub_id}: {sub.from_code} -> {sub.to_code} "
                            "is no longer on this schedule",
                        )
                    )
                    continue
                sub.a, sub.b = legs
                new_view = feed.add(sub)
                new_view.version = -1
        if not feed.views:
            feed.empty_since = time.monotonic()

    # ---- frames -----------------------------------------------------------------------------

    @staticmethod
    def _snapshot_tail(
        layout: Layout, snap: Snapshot, sub: Subscription, classes: list[ClassAvailability]
    ) -> bytes:
        seat_map = None
        if sub.seats:
            seat_map = dict(
                zip(layout.seat_ids, seat_states(layout, snap, sub.a, sub.b), strict=True)
            )
        body = SnapshotBody(
            sub.schedule_id, sub.from_code, sub.to_code, snap.version, classes, seat_map
        )
        return protocol.encode(body)[1:]

    @staticmethod
    def _snapshot_frame(sub: Subscription, tail: bytes) -> bytes:
        return SNAPSHOT_HEAD + sub.sub_id.encode() + b'",' + tail

    @staticmethod
    def _status_frame(schedule_id: str, status: str, delay: int, reason: str) -> bytes:
        # no reason is null, as in the REST status view (Redis keeps it as "")
        return protocol.encode(protocol.ScheduleStatus(schedule_id, status, delay, reason or None))

    # ---- housekeeping -----------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            try:
                await self._housekeep()
            except Exception:
                log.exception("ws: watchdog pass failed")

    async def _housekeep(self) -> None:
        for client in self.hub.slow_clients():
            metrics.WS_SLOW_CLOSES.inc()
            log.info("ws: closing slow client %d (%d frames queued)", client.conn_id, client.queued)
            client.abort()
        now = time.monotonic()
        for schedule_id, feed in list(self.hub.feeds.items()):
            if feed.views or not feed.empty_since or now - feed.empty_since < FEED_LINGER_S:
                continue
            del self.hub.feeds[schedule_id]
            if feed.timer is not None:
                feed.timer.cancel()
            if feed.ready is not None and feed.ready.done() and not feed.ready.exception():
                with contextlib.suppress(RedisError, OSError):
                    await self.broker.unsubscribe(schedule_id)


def _changed_states(layout: Layout, sold: int, taken: int, changed: int) -> dict[str, str]:
    """Seat id -> journey state for each set bit of ``changed`` (bit i from the top = seat i)."""
    top = layout.row_bytes * 8 - 1
    seat_ids = layout.seat_ids
    out: dict[str, str] = {}
    while changed:
        low = changed & -changed
        changed ^= low
        index = top - (low.bit_length() - 1)
        out[seat_ids[index]] = "sold" if sold & low else ("held" if taken & low else "free")
    return out
