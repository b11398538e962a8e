"""The in-process registry: connections, their subscriptions, and the views they share.

A *view* is what a subscription looks at: (schedule, legs [a, b), with or without seats).
Every subscription of one view receives the same update bytes (only the ``sub`` id spliced in
front differs), so the fan-out computes and encodes one update per view per tick. Per
schedule the hub holds a :class:`Feed`: its views and the coalescing state the fan-out uses.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from kai_inventory import metrics
from kai_inventory.engine.views import ClassAvailability
from kai_inventory.ws.client import SLOW_DEADLINE_S, Client
from kai_inventory.ws.protocol import sub_head

ViewKey = tuple[int, int, bool]


class Subscription:
    __slots__ = (
        "a",
        "b",
        "client",
        "from_code",
        "head",
        "resync",
        "schedule_id",
        "seats",
        "sub_id",
        "to_code",
        "version",
    )

    def __init__(
        self,
        client: Client,
        sub_id: str,
        schedule_id: str,
        from_code: str,
        to_code: str,
        a: int,
        b: int,
        seats: bool,
    ) -> None:
        self.client = client
        self.sub_id = sub_id
        self.schedule_id = schedule_id
        self.from_code = from_code
        self.to_code = to_code
        self.a = a
        self.b = b
        self.seats = seats
        self.head = sub_head(sub_id)
        self.version = -1  # last version sent; versions only grow
        self.resync = False  # the next message must be a snapshot

    @property
    def view_key(self) -> ViewKey:
        return (self.a, self.b, self.seats)


@dataclass
class View:
    key: ViewKey
    subs: dict[Subscription, None] = field(default_factory=dict)  # ordered set
    version: int = -1
    layout_id: str = ""
    classes: list[ClassAvailability] | None = None
    sold: int = 0  # journey masks (engine.views.journey_masks) at ``version``
    taken: int = 0  # sold or held

    def overlaps(self, a: int, b: int) -> bool:
        return self.key[0] < b and a < self.key[1]


@dataclass
class Feed:
    """One schedule with local subscribers: one broker subscription, many views."""

    schedule_id: str
    views: dict[ViewKey, View] = field(default_factory=dict)
    ready: asyncio.Future[None] | None = None  # resolved once the broker subscription is active
    version_seen: int = -1  # highest version seen in an event or a snapshot
    dirty: bool = False
    dirty_all: bool = False  # no cheap pre-filter: look at every view
    ranges: list[tuple[int, int]] = field(default_factory=list)
    resync_all: str = ""  # reason, when every subscription needs a snapshot
    first_event_at: float = 0.0  # time.time() at receipt of the first event of this tick
    pending: set[Subscription] = field(default_factory=set)  # subscriptions owed a snapshot
    timer: asyncio.TimerHandle | None = None
    running: bool = False
    tick_s: float = 0.0  # EWMA of recent ticks' fire -> last frame sent, s (0: none measured)
    empty_since: float = 0.0  # monotonic time the last subscriber left (0: has subscribers)

    @property
    def n_subs(self) -> int:
        return sum(len(v.subs) for v in self.views.values())

    def add(self, sub: Subscription) -> View:
        view = self.views.get(sub.view_key)
        if view is None:
            view = self.views[sub.view_key] = View(sub.view_key)
        view.subs[sub] = None
        return view

    def remove(self, sub: Subscription) -> None:
        view = self.views.get(sub.view_key)
        if view is not None:
            view.subs.pop(sub, None)
            if not view.subs:
                del self.views[sub.view_key]


class Hub:
    """Connections and feeds of this process, plus the slow-client watchdog."""

    def __init__(self, slow_deadline_s: float = SLOW_DEADLINE_S) -> None:
        self.clients: dict[int, Client] = {}
        self.feeds: dict[str, Feed] = {}
        self.slow_deadline_s = slow_deadline_s
        self._next_conn = 0

    def next_conn_id(self) -> int:
        self._next_conn += 1
        return self._next_conn

    def add_client(self, client: Client) -> None:
        self.clients[client.conn_id] = client
        metrics.WS_CONNECTIONS.inc()

    def remove_client(self, client: Client) -> list[Subscription]:
        if self.clients.pop(client.conn_id, None) is not None:
            metrics.WS_CONNECTIONS.dec()
        subs = list(client.subs.values())
        for sub in subs:
            self.remove_subscription(sub)
        return subs

    def add_subscription(self, feed: Feed, sub: Subscription) -> View:
        sub.client.subs[sub.sub_id] = sub
        metrics.WS_SUBSCRIPTIONS.inc()
        return feed.add(sub)

    def remove_subscription(self, sub: Subscription) -> Feed | None:
        """Drop one subscription; returns its feed when that feed has no subscriber left."""
        if sub.client.subs.pop(sub.sub_id, None) is not None:
            metrics.WS_SUBSCRIPTIONS.dec()
        feed = self.feeds.get(sub.schedule_id)
        if feed is None:
            return None
        feed.remove(sub)
        return feed if not feed.views else None

    def slow_clients(self, now: float | None = None) -> list[Client]:
        """Clients with frames queued that wrote nothing for longer than the deadline."""
        now = time.monotonic() if now is None else now
        deadline = self.slow_deadline_s
        return [
            c
            for c in self.clients.values()
            if c.queued and not c.closed and now - c.last_progress > deadline
        ]

    def clients_of(self, schedule_id: str) -> list[Client]:
        feed = self.feeds.get(schedule_id)
        if feed is None:
            return []
        seen: dict[int, Client] = {}
        for view in feed.views.values():
            for sub in view.subs:
                seen.setdefault(sub.client.conn_id, sub.client)
        return list(seen.values())
