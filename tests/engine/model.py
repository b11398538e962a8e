"""A pure-Python reference model of one schedule's inventory, and small layout helpers.

The model keeps, per leg and seat, whether the seat-leg is sold and which live hold holds it.
Time is the test's clock (ms since the schedule opened); a hold is expired once now >= expires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kai_inventory.engine.codes import Code
from kai_inventory.engine.layout import Layout

STOPS = ["GMR", "JNG", "CN", "PWT", "YK"]


def small_layout(
    schedule_id: str = "S1",
    stops: list[str] | None = None,
    coaches: list[tuple[int, str, list[str]]] | None = None,
    departures_ms: list[int] | None = None,
) -> Layout:
    """A small train: by default car 1 executive (4 seats), cars 2 and 3 economy (4 each)."""
    stops = stops or STOPS
    if coaches is None:
        coaches = [
            (2, "economy", ["1A", "1B", "1C", "1D"]),
            (1, "executive", ["1A", "1B", "1C", "1D"]),
            (3, "economy", ["1A", "1B", "1C", "1D"]),
        ]
    if departures_ms is None:
        far = int(time.time() * 1000) + 10 * 86_400_000
        departures_ms = [far] * len(stops)
    return Layout.build(schedule_id, stops, departures_ms, coaches)


@dataclass
class ModelHold:
    user: str
    a: int
    b: int
    seats: list[int]
    expires: int
    status: str = "held"


@dataclass
class Model:
    layout: Layout
    max_active: int = 0
    now: int = 0
    sold: list[list[bool]] = field(default_factory=list)
    held: list[list[str | None]] = field(default_factory=list)
    holds: dict[str, ModelHold] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, legs = self.layout.n_seats, self.layout.n_legs
        self.sold = [[False] * n for _ in range(legs)]
        self.held = [[None] * n for _ in range(legs)]

    # ---- time ---------------------------------------------------------------------------

    def advance(self, ms: int) -> None:
        self.now += ms
        self.expire()

    def expire(self) -> None:
        for hid, hold in self.holds.items():
            if hold.status in ("held", "confirming") and self.now >= hold.expires:
                self._end(hid, "expired")

    def _end(self, hid: str, status: str) -> None:
        hold = self.holds[hid]
        for k in range(hold.a, hold.b):
            for i in hold.seats:
                assert self.held[k][i] == hid
                self.held[k][i] = None
        hold.status = status

    # ---- reads ----------------------------------------------------------------------------

    def seat_free(self, a: int, b: int, i: int) -> bool:
        return all(not self.sold[k][i] and self.held[k][i] is None for k in range(a, b))

    def states(self, a: int, b: int) -> list[str]:
        out = []
        for i in range(self.layout.n_seats):
            if any(self.sold[k][i] for k in range(a, b)):
                out.append("sold")
            elif any(self.held[k][i] is not None for k in range(a, b)):
                out.append("held")
            else:
                out.append("free")
        return out

    def availability(self, a: int, b: int) -> list[tuple[str, int, int]]:
        return [
            (
                span.cls,
                span.end - span.start,
                sum(self.seat_free(a, b, i) for i in range(span.start, span.end)),
            )
            for span in self.layout.classes
        ]

    def live_holds_of(self, user: str) -> int:
        return sum(
            1
            for h in self.holds.values()
            if h.user == user and h.status in ("held", "confirming") and self.now < h.expires
        )

    # ---- writes (each returns what the engine must answer) ---------------------------------

    def _limit_reached(self, user: str) -> bool:
        return self.max_active > 0 and self.live_holds_of(user) >= self.max_active

    def hold_seats(
        self, hid: str, user: str, a: int, b: int, seats: list[int], ttl: int
    ) -> tuple[Code, list[int]]:
        self.expire()
        if self._limit_reached(user):
            return Code.HOLD_LIMIT, []
        bad = [i for i in seats if not self.seat_free(a, b, i)]
        if bad:
            return Code.SEATS_UNAVAILABLE, bad
        self._grant(hid, user, a, b, seats, ttl)
        return Code.OK, []

    def hold_class_check(self, user: str, a: int, b: int, cls: str, count: int) -> tuple[Code, int]:
        """The answer for a class hold; on OK the caller applies the engine's chosen seats."""
        self.expire()
        if self._limit_reached(user):
            return Code.HOLD_LIMIT, 0
        span = self.layout.class_span(cls)
        free = (
            0 if span is None else sum(self.seat_free(a, b, i) for i in range(span.start, span.end))
        )
        if free < count:
            return Code.INSUFFICIENT_INVENTORY, free
        return Code.OK, free

    def _grant(self, hid: str, user: str, a: int, b: int, seats: list[int], ttl: int) -> None:
        for k in range(a, b):
            for i in seats:
                assert not self.sold[k][i], (k, i)
                assert self.held[k][i] is None, (k, i)
                self.held[k][i] = hid
        self.holds[hid] = ModelHold(user, a, b, list(seats), self.now + ttl)

    def grant_class(self, hid: str, user: str, a: int, b: int, seats: list[int], ttl: int) -> None:
        self._grant(hid, user, a, b, seats, ttl)

    def release(self, hid: str, user: str | None) -> Code:
        self.expire()
        hold = self.holds.get(hid)
        if hold is None or (user is not None and hold.user != user):
            return Code.HOLD_NOT_FOUND
        if hold.status == "confirmed":
            return Code.HOLD_CONFIRMED
        if hold.status in ("held", "confirming"):
            self._end(hid, "released")
        return Code.OK

    def confirm_begin(self, hid: str, user: str | None) -> Code:
        self.expire()
        hold = self.holds.get(hid)
        if hold is None or (user is not None and hold.user != user):
            return Code.HOLD_NOT_FOUND
        return {
            "confirmed": Code.HOLD_CONFIRMED,
            "released": Code.HOLD_RELEASED,
            "expired": Code.HOLD_EXPIRED,
        }.get(hold.status, Code.OK)

    def confirm(self, hid: str) -> Code:
        """held -> sold; for an ended hold (reconcile path) sold anyway, other holds revoked."""
        self.expire()
        hold = self.holds.get(hid)
        if hold is None:
            return Code.HOLD_NOT_FOUND
        if hold.status == "confirmed":
            return Code.OK
        if hold.status in ("held", "confirming"):
            self._end(hid, "confirmed")
        else:
            victims = {
                self.held[k][i]
                for k in range(hold.a, hold.b)
                for i in hold.seats
                if self.held[k][i] is not None
            }
            for other in victims:
                assert other is not None
                self._end(other, "released")
            hold.status = "confirmed"
        for k in range(hold.a, hold.b):
            for i in hold.seats:
                self.sold[k][i] = True
        return Code.OK

    def cancel(self, a: int, b: int, seats: list[int]) -> Code:
        self.expire()
        hit = False
        for k in range(a, b):
            for i in seats:
                if self.sold[k][i]:
                    self.sold[k][i] = False
                    hit = True
        return Code.OK if hit else Code.NOT_SOLD
