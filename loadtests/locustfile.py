"""Locust scenarios for a holiday sale opening (black box over the public HTTP/WebSocket API).

Users:
- ``PeakSaleUser``: searches the popular train, holds by class and by seat, confirms a share of
  its holds and releases a share (the rest expire). A 409 for seats someone else took is a
  normal outcome of a sale, so it counts as a success.
- ``BrowsingUser``: search, availability, seat map.
- ``ServiceClient``: another service asking ``POST /v1/availability/query`` in batches.
- ``SeatMapWatcher``: a WebSocket subscriber (websocket-client, gevent-friendly once Locust has
  patched the socket module) that measures how late updates arrive after a change it made.

The run creates its own schedules through the admin API (ids prefixed by ``KAILT_RUN``), so it
needs no seed data. ``SaleOpeningShape`` ramps to the peak within seconds, holds, then decays.

Environment (``KAILT_*``, never ``KAI_*``, which the server reserves):
``KAILT_RUN`` run id / schedule prefix; ``KAILT_PEAK_USERS`` (30); ``KAILT_DURATION_S`` (25);
``KAILT_SUMMARY`` where to write the run summary JSON (status codes per request, confirmed
tickets, schedules) for ``checks.py``; ``KAILT_HOLD_TTL_S`` (30); ``KAILT_SETUP`` (1: create
the schedules at test start). ``KAI_JWT_SECRET`` must match the server's.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import threading
import time
from typing import Any

import gevent
import websocket
from gevent.event import Event
from kaiload import (
    ScheduleInfo,
    build_run_schedules,
    create_run_schedules,
    mint_token,
    run_id,
)
from locust import LoadTestShape, between, constant, events, task
from locust.contrib.fasthttp import FastHttpUser

RUN = os.environ.get("KAILT_RUN") or run_id()
PEAK_USERS = int(os.environ.get("KAILT_PEAK_USERS", "30"))
DURATION_S = float(os.environ.get("KAILT_DURATION_S", "25"))
HOLD_TTL_S = int(os.environ.get("KAILT_HOLD_TTL_S", "30"))
SUMMARY_PATH = os.environ.get("KAILT_SUMMARY", "")

# 409 codes that a sale produces by design: someone else was faster, or a user limit applies.
EXPECTED_CONFLICTS = {"seats_unavailable", "insufficient_inventory", "hold_limit", "rate_limited"}

SCHEDULES: list[ScheduleInfo] = build_run_schedules(RUN)
_counter = itertools.count()
_lock = threading.Lock()
STATUS_COUNTS: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
TICKETS: list[dict[str, Any]] = []  # every ticket a confirm returned: schedule, seat, from, to
RELEASED: list[str] = []
WS_MESSAGES: collections.Counter[str] = collections.Counter()
_watchers = itertools.count()


def _peak() -> ScheduleInfo:
    return SCHEDULES[0]


def _user_name() -> str:
    return f"{RUN}-u{next(_counter)}"


def _journey(info: ScheduleInfo, rng: random.Random, hot: bool = False) -> tuple[str, str]:
    """A from/to pair; ``hot`` favours the few long journeys everyone wants at an opening."""
    stops = info.stops
    if hot and rng.random() < 0.6:
        a, b = rng.choice([(0, len(stops) - 1), (0, len(stops) // 2), (1, len(stops) - 2)])
    else:
        a = rng.randrange(0, len(stops) - 1)
        b = rng.randrange(a + 1, len(stops))
    return stops[a], stops[b]


# locust's EventHook.add_listener and LoadTestShape's methods carry no annotations: hence the
# narrow ignores below
@events.request.add_listener  # type: ignore[untyped-decorator]  # locust: unannotated
def _count_status(name: str, response: Any = None, **_: Any) -> None:
    status = getattr(response, "status_code", None)
    if status is not None:
        STATUS_COUNTS[name][int(status)] += 1


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # locust: unannotated
def _create_schedules(environment: Any, **_: Any) -> None:
    if os.environ.get("KAILT_SETUP", "1") != "1":
        return
    host = (environment.host or "").rstrip("/")
    create_run_schedules(host, SCHEDULES, RUN)


def write_summary() -> None:
    if not SUMMARY_PATH:
        return
    with _lock:
        summary = {
            "run": RUN,
            "schedules": [s.to_json() for s in SCHEDULES],
            "status_counts": {
                k: {str(s): n for s, n in v.items()} for k, v in STATUS_COUNTS.items()
            },
            "tickets": list(TICKETS),
            "released_holds": len(RELEASED),
            "ws_messages": dict(WS_MESSAGES),
        }
    tmp = SUMMARY_PATH + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(summary, fh)
    os.replace(tmp, SUMMARY_PATH)


@events.test_stop.add_listener  # type: ignore[untyped-decorator]  # locust: unannotated
def _on_stop(**_: Any) -> None:
    write_summary()


@events.quitting.add_listener  # type: ignore[untyped-decorator]  # locust: unannotated
def _on_quit(**_: Any) -> None:
    write_summary()


def _problem_code(response: Any) -> str:
    try:
        return str(response.json().get("code", ""))
    except Exception:
        return ""


def _judge(response: Any, ok: tuple[int, ...], conflicts: bool = False) -> bool:
    """Mark a catch_response result; returns True when the request did what was asked."""
    status = response.status_code
    if status in ok:
        response.success()
        return True
    code = _problem_code(response)
    if conflicts and status in (409, 429) and code in EXPECTED_CONFLICTS:
        response.success()
        return False
    if status >= 500 or status == 0:
        response.failure(f"{status} {code or 'server error'}")
    else:
        response.failure(f"unexpected {status} {code}")
    return False


class _ApiUser(FastHttpUser):
    abstract = True
    scopes = "inventory:read inventory:hold"

    def on_start(self) -> None:
        self.rng = random.Random()
        self.sub = _user_name()
        self.token = mint_token(self.sub, self.scopes, ttl_s=int(DURATION_S) + 3600)
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def search(self, info: ScheduleInfo) -> None:
        a, b = _journey(info, self.rng, hot=True)
        with self.client.get(
            f"/v1/schedules?from={a}&to={b}&date={info.date}",
            name="GET /v1/schedules [search]",
            catch_response=True,
        ) as r:
            _judge(r, (200,))

    def availability(self, info: ScheduleInfo) -> None:
        a, b = _journey(info, self.rng)
        with self.client.get(
            f"/v1/schedules/{info.schedule_id}/availability?from={a}&to={b}",
            name="GET /v1/schedules/{id}/availability",
            catch_response=True,
        ) as r:
            _judge(r, (200,))

    def seatmap(self, info: ScheduleInfo, a: str, b: str) -> dict[str, Any] | None:
        with self.client.get(
            f"/v1/schedules/{info.schedule_id}/seatmap?from={a}&to={b}",
            name="GET /v1/schedules/{id}/seatmap",
            catch_response=True,
        ) as r:
            if _judge(r, (200,)):
                body: dict[str, Any] = r.json()
                return body
        return None


class PeakSaleUser(_ApiUser):
    """A passenger at a holiday opening: search, hold, then confirm or release."""

    weight = 10
    wait_time = between(0.2, 0.8)

    def hold(self, body: dict[str, Any], name: str) -> dict[str, Any] | None:
        body["ttl_s"] = HOLD_TTL_S
        with self.client.post(
            "/v1/holds", json=body, headers=self.auth, name=name, catch_response=True
        ) as r:
            if _judge(r, (201,), conflicts=True):
                hold: dict[str, Any] = r.json()
                return hold
        return None

    def settle(self, hold: dict[str, Any]) -> None:
        """Confirm about a third of the holds, release about half, let the rest expire."""
        roll = self.rng.random()
        if roll < 0.35:
            self.confirm(hold)
        elif roll < 0.85:
            with self.client.delete(
                f"/v1/holds/{hold['hold_id']}",
                headers=self.auth,
                name="DELETE /v1/holds/{id}",
                catch_response=True,
            ) as r:
                if _judge(r, (200,)):
                    with _lock:
                        RELEASED.append(hold["hold_id"])

    def confirm(self, hold: dict[str, Any]) -> None:
        info = _peak()
        seats: list[str] = hold["seats"]
        amount = sum(info.price_by_seat.get(s, 0) for s in seats)
        body = {
            "passengers": [
                {
                    "name": f"Penumpang {i + 1}",
                    "id_number": f"3174{self.rng.randrange(10**11, 10**12)}",
                    "type": "adult",
                    "seat": seat,
                }
                for i, seat in enumerate(seats)
            ],
            "payment": {
                "method": "qris",
                "reference": f"PG-{hold['hold_id'][-12:]}",
                "amount": str(amount),
            },
        }
        with self.client.post(
            f"/v1/holds/{hold['hold_id']}/confirm",
            json=body,
            headers=self.auth,
            name="POST /v1/holds/{id}/confirm",
            catch_response=True,
        ) as r:
            if _judge(r, (200, 201)):
                booking = r.json()
                with _lock:
                    for ticket in booking.get("tickets", []):
                        TICKETS.append(
                            {
                                "schedule_id": booking["schedule_id"],
                                "booking": booking["booking_number"],
                                "seat": ticket["seat"],
                                "from": booking["from"],
                                "to": booking["to"],
                            }
                        )

    @task(3)
    def hold_by_class(self) -> None:
        info = _peak()
        self.search(info)
        a, b = _journey(info, self.rng, hot=True)
        cls = "executive" if self.rng.random() < 0.3 else "economy"
        body = {
            "schedule_id": info.schedule_id,
            "from": a,
            "to": b,
            "class": cls,
            "count": self.rng.choice((1, 1, 2, 2, 3, 4)),
        }
        hold = self.hold(body, "POST /v1/holds [class]")
        if hold:
            self.settle(hold)

    @task(2)
    def hold_by_seat(self) -> None:
        info = _peak()
        a, b = _journey(info, self.rng, hot=True)
        seatmap = self.seatmap(info, a, b)
        if seatmap is None:
            return
        free = [
            seat["seat"]
            for coach in seatmap["coaches"]
            for seat in coach["seats"]
            if seat["state"] == "free"
        ]
        if not free:
            return
        # A popular window seat near the front: many users race for the same few seats.
        pick = free[: max(4, len(free) // 20)]
        count = min(len(pick), self.rng.choice((1, 2)))
        body = {
            "schedule_id": info.schedule_id,
            "from": a,
            "to": b,
            "seats": self.rng.sample(pick, count),
        }
        hold = self.hold(body, "POST /v1/holds [seats]")
        if hold:
            self.settle(hold)


class BrowsingUser(_ApiUser):
    """Someone looking around: search, availability and seat maps of any train."""

    weight = 4
    wait_time = between(0.3, 1.0)

    @task(2)
    def browse_search(self) -> None:
        self.search(self.rng.choice(SCHEDULES))

    @task(3)
    def browse_availability(self) -> None:
        self.availability(self.rng.choice(SCHEDULES))

    @task(2)
    def browse_seatmap(self) -> None:
        info = self.rng.choice(SCHEDULES)
        a, b = _journey(info, self.rng)
        self.seatmap(info, a, b)


class ServiceClient(_ApiUser):
    """Another service (a travel agent, the mobile app's backend) asking in batches."""

    weight = 1
    wait_time = between(0.5, 1.5)
    scopes = "inventory:read"

    @task
    def batch(self) -> None:
        queries = []
        for _ in range(self.rng.randrange(20, 101)):
            info = self.rng.choice(SCHEDULES)
            a, b = _journey(info, self.rng)
            queries.append({"schedule_id": info.schedule_id, "from": a, "to": b})
        with self.client.post(
            "/v1/availability/query",
            json={"queries": queries},
            headers=self.auth,
            name="POST /v1/availability/query",
            catch_response=True,
        ) as r:
            if _judge(r, (200,)):
                results = r.json().get("results", [])
                if len(results) != len(queries) or any("error" in x for x in results):
                    r.failure("batch answer does not match the queries")


class SeatMapWatcher(_ApiUser):
    """A live seat map: subscribes over WebSocket and times updates for changes it makes.

    It subscribes (with seats) to the popular train, so its connection carries the sale's real
    fan-out traffic, and to a quiet train of its own that nobody else holds on. There each cycle
    holds one free seat (by seat id) and waits for the update showing it ``held``, then releases
    it and waits for ``free``. On the quiet train no one else can take the seat in between (on the
    popular one a release may rightly send nothing: another user's hold keeps the seat ``held``).
    The time from sending the HTTP request to the update's arrival is reported as a ``WS``
    request, so Locust's percentiles show the push lag.
    """

    fixed_count = 2
    wait_time = constant(0.5)
    update_timeout_s = 5.0

    def on_start(self) -> None:
        super().on_start()
        quiet = SCHEDULES[1:] or SCHEDULES
        self.quiet = quiet[next(_watchers) % len(quiet)]
        self.journey = (self.quiet.stops[0], self.quiet.stops[-1])
        self.states: dict[str, str] = {}
        self.waiting: dict[tuple[str, str], Event] = {}
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.connect()

    def on_stop(self) -> None:
        if self.reader is not None:
            self.reader.kill(block=False)
        if self.ws is not None:
            self.ws.close()

    def _fire(self, name: str, started: float, exc: Exception | None = None, size: int = 0) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=size,
            exception=exc,
            context={},
        )

    def connect(self) -> None:
        assert self.host is not None  # FastHttpUser refuses to start without a host
        base = self.host.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
        peak = _peak()
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(f"{base}/v1/ws", timeout=10)
            a, b = self.journey
            subscribe = {"op": "subscribe", "schedule_id": self.quiet.schedule_id, "seats": True}
            self.ws.send(json.dumps({**subscribe, "from": a, "to": b}))
            while True:
                message = json.loads(self.ws.recv())
                if message.get("type") == "snapshot":
                    self.states = dict(message.get("seats", {}))
                    break
                if message.get("type") == "error":
                    raise RuntimeError(f"subscribe refused: {message}")
            hot = {"op": "subscribe", "schedule_id": peak.schedule_id, "seats": True}
            self.ws.send(json.dumps({**hot, "from": peak.stops[0], "to": peak.stops[-1]}))
        except Exception as exc:
            self._fire("WS subscribe -> snapshot", started, exc)
            self.ws = None
            return
        self._fire("WS subscribe -> snapshot", started, size=len(self.states))
        self.ws.settimeout(None)
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        assert self.ws is not None
        while True:
            try:
                message = json.loads(self.ws.recv())
            except Exception:
                return
            kind = message.get("type")
            if kind not in ("snapshot", "update"):
                continue
            if message.get("schedule_id") != self.quiet.schedule_id:
                with _lock:
                    WS_MESSAGES[f"{kind} (popular train)"] += 1
                continue
            if kind == "snapshot":
                self.states = dict(message.get("seats", {}))
                changed = self.states
            else:
                changed = message.get("seats", {})
                self.states.update(changed)
            for seat, state in changed.items():
                event = self.waiting.get((seat, state))
                if event is not None:
                    event.set()

    def _await(self, seat: str, state: str, name: str, started: float, event: Event) -> None:
        if event.wait(self.update_timeout_s):
            self._fire(name, started)
        else:
            self._fire(name, started, TimeoutError(f"no update for {seat} -> {state}"))
        self.waiting.pop((seat, state), None)

    @task
    def change_and_watch(self) -> None:
        if self.ws is None:
            self.connect()
            return
        free = [seat for seat, state in self.states.items() if state == "free"]
        if not free:
            return
        seat = self.rng.choice(free)
        a, b = self.journey
        held = self.waiting[(seat, "held")] = Event()
        started = time.perf_counter()
        body = {"schedule_id": self.quiet.schedule_id, "from": a, "to": b, "seats": [seat]}
        with self.client.post(
            "/v1/holds",
            json=body,
            headers=self.auth,
            name="POST /v1/holds [seats]",
            catch_response=True,
        ) as r:
            ok = _judge(r, (201,), conflicts=True)
            hold_id = r.json().get("hold_id") if ok else None
        if not ok:
            self.waiting.pop((seat, "held"), None)
            return
        self._await(seat, "held", "WS update lag [hold]", started, held)
        freed = self.waiting[(seat, "free")] = Event()
        started = time.perf_counter()
        with self.client.delete(
            f"/v1/holds/{hold_id}",
            headers=self.auth,
            name="DELETE /v1/holds/{id}",
            catch_response=True,
        ) as r:
            ok = _judge(r, (200,))
        if ok:
            self._await(seat, "free", "WS update lag [release]", started, freed)
        else:
            self.waiting.pop((seat, "free"), None)


class SaleOpeningShape(LoadTestShape):
    """Ticket sale opens at t=0: ramp to the peak in ~2 s, hold, then decay to a trickle.

    Phases are fractions of ``KAILT_DURATION_S``: 8% ramp, 67% peak, 25% decay to a fifth.
    Returns None at the end so a headless run stops by itself after the fixed time.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # locust: unannotated
        self.duration = DURATION_S
        self.peak = PEAK_USERS

    def tick(self) -> tuple[int, float] | None:
        t: float = self.get_run_time()  # type: ignore[no-untyped-call]  # locust: unannotated
        if t >= self.duration:
            return None
        ramp_end = max(1.0, min(3.0, 0.08 * self.duration))
        hold_end = ramp_end + 0.67 * self.duration
        spawn_rate = self.peak / ramp_end * 1.5
        if t < hold_end:
            return self.peak, spawn_rate
        left = (self.duration - t) / max(0.001, self.duration - hold_end)
        users = max(1, int(self.peak * (0.2 + 0.8 * left)))
        return users, spawn_rate
