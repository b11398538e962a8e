"""The Lua scripts and the pure-Python model, driven by the same random operations, agree on
every answer, on availability and on seat maps for every journey, at every step."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from model import Model, small_layout

from kai_inventory.engine import views
from kai_inventory.engine.codes import Code
from kai_inventory.engine.connection import client_for_url
from kai_inventory.engine.inventory import HoldRequest, Inventory
from kai_inventory.engine.keys import Keys

USERS = ["nobody", "bob", "carol"]
MAX_ACTIVE = 3
STEP_MS = 10_000  # TTLs and clock moves are multiples of this: far above a step's real duration
_counter = itertools.count()


def journeys(legs: int) -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(0, legs - 1), st.integers(1, legs)).filter(lambda t: t[0] < t[1])


def make_machine(redis_url: str, key_prefix: str) -> type[RuleBasedStateMachine]:
    layout_template = small_layout()
    legs = layout_template.n_legs
    n = layout_template.n_seats

    class InventoryMachine(RuleBasedStateMachine):
        holds = Bundle("holds")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.client: Any = client_for_url(redis_url)
            self.inv = Inventory(self.client, Keys(key_prefix), test_clock=True)
            self.schedule_id = f"M{next(_counter)}"
            self.layout = small_layout(self.schedule_id)
            self.model = Model(self.layout, max_active=MAX_ACTIVE)
            self.users = {name: f"{self.schedule_id}-{name}" for name in USERS}
            self.run(self.inv.load_scripts())
            assert self.run(self.inv.open(self.layout)).created

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            self.run(self.client.aclose())
            self.loop.close()

        def _request(self, user: str, a: int, b: int, ttl: int, **kw: Any) -> HoldRequest:
            return HoldRequest(self.schedule_id, user, a, b, ttl, max_active=MAX_ACTIVE, **kw)

        @rule(
            target=holds,
            user=st.sampled_from(USERS),
            journey=journeys(legs),
            seats=st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True),
            ttl_steps=st.integers(1, 3),
        )
        def hold_seats(
            self, user: str, journey: tuple[int, int], seats: list[int], ttl_steps: int
        ) -> str:
            a, b = journey
            user = self.users[user]
            ttl = ttl_steps * STEP_MS
            out = self.run(self.inv.hold(self._request(user, a, b, ttl, seats=seats)))
            hid = out.hold.hold_id if out.hold else f"{self.schedule_id}.none{next(_counter)}"
            code, bad = self.model.hold_seats(hid, user, a, b, seats, ttl)
            assert out.code == code, (out, code)
            if code == Code.SEATS_UNAVAILABLE:
                assert sorted(out.unavailable) == sorted(bad)
            if code == Code.OK:
                assert out.hold is not None
                assert out.hold.seats == seats
                assert (out.hold.a, out.hold.b) == (a, b)
            return hid

        @rule(
            target=holds,
            user=st.sampled_from(USERS),
            journey=journeys(legs),
            cls=st.sampled_from(["economy", "executive", "business"]),
            count=st.integers(1, 4),
            strategy=st.sampled_from(["best", "first"]),
            ttl_steps=st.integers(1, 3),
        )
        def hold_class(
            self,
            user: str,
            journey: tuple[int, int],
            cls: str,
            count: int,
            strategy: str,
            ttl_steps: int,
        ) -> str:
            a, b = journey
            user = self.users[user]
            ttl = ttl_steps * STEP_MS
            req = self._request(user, a, b, ttl, seat_class=cls, count=count, strategy=strategy)
            out = self.run(self.inv.hold(req))
            code, free = self.model.hold_class_check(user, a, b, cls, count)
            assert out.code == code, (out, code)
            if code == Code.INSUFFICIENT_INVENTORY:
                assert out.available == free
            if code != Code.OK:
                return f"{self.schedule_id}.none{next(_counter)}"
            assert out.hold is not None
            span = self.layout.class_span(cls)
            assert span is not None
            chosen = out.hold.seats
            assert len(chosen) == count == len(set(chosen))
            assert all(span.start <= i < span.end for i in chosen)
            assert all(self.model.seat_free(a, b, i) for i in chosen)
            self.model.grant_class(out.hold.hold_id, user, a, b, chosen, ttl)
            return out.hold.hold_id

        @rule(hid=holds, as_owner=st.booleans())
        def release(self, hid: str, as_owner: bool) -> None:
            model_hold = self.model.holds.get(hid)
            user: str | None = None
            if as_owner:
                user = model_hold.user if model_hold else "nobody"
            code, _ = self.run(self.inv.release(hid, user))
            assert code == self.model.release(hid, user)

        @rule(hid=holds, wrong_user=st.booleans())
        def confirm(self, hid: str, wrong_user: bool) -> None:
            model_hold = self.model.holds.get(hid)
            user = model_hold.user if model_hold else "nobody"
            if wrong_user:
                user = "mallory"
            code, _ = self.run(self.inv.confirm_begin(hid, user))
            assert code == self.model.confirm_begin(hid, user)
            if code == Code.OK:
                assert self.run(self.inv.confirm(hid, "BK-" + hid[-6:])) == Code.OK
                assert self.model.confirm(hid) == Code.OK

        @rule(hid=holds)
        def confirm_after_end(self, hid: str) -> None:
            """The reconcile path: Postgres committed a hold that Redis already ended."""
            model_hold = self.model.holds.get(hid)
            self.model.expire()
            if model_hold is None or model_hold.status not in ("released", "expired"):
                return
            assert self.run(self.inv.confirm(hid, "BK-late")) == Code.OK
            assert self.model.confirm(hid) == Code.OK

        @rule(hid=holds)
        def begin_then_abort(self, hid: str) -> None:
            model_hold = self.model.holds.get(hid)
            user = model_hold.user if model_hold else "nobody"
            code, _ = self.run(self.inv.confirm_begin(hid, user))
            assert code == self.model.confirm_begin(hid, user)
            if code == Code.OK:
                assert self.run(self.inv.confirm_abort(hid)) == Code.OK

        @rule(
            journey=journeys(legs),
            seats=st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True),
        )
        def cancel(self, journey: tuple[int, int], seats: list[int]) -> None:
            a, b = journey
            code = self.run(self.inv.cancel(self.schedule_id, a, b, seats))
            assert code == self.model.cancel(a, b, seats)

        @rule(steps=st.integers(1, 2))
        def advance_clock(self, steps: int) -> None:
            self.run(self.inv.advance_clock(self.schedule_id, steps * STEP_MS))
            self.model.advance(steps * STEP_MS)

        @invariant()
        def same_views(self) -> None:
            snap = self.run(self.inv.snapshot(self.schedule_id))
            assert snap is not None
            self.model.expire()
            for a in range(legs):
                for b in range(a + 1, legs + 1):
                    assert views.seat_states(self.layout, snap, a, b) == self.model.states(a, b)
                    got = [
                        (c.cls, c.total, c.available)
                        for c in views.availability(self.layout, snap, a, b)
                    ]
                    assert got == self.model.availability(a, b)

        @invariant()
        def live_hold_hashes_match(self) -> None:
            for hid, hold in self.model.holds.items():
                if hold.status in ("held", "confirmed", "released", "expired"):
                    got = self.run(self.inv.get_hold(hid))
                    assert got is not None
                    assert got.status == hold.status, (hid, got, hold)

    return InventoryMachine


def test_lua_scripts_agree_with_the_reference_model(engine_url: str, key_prefix: str) -> None:
    """On one Redis and on Redis Cluster (where the user's limit, rate and idempotency run in
    the user's slot around the schedule's script)."""
    machine = make_machine(engine_url, key_prefix)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
