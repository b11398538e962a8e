"""Inventory behaviours one at a time: hold rules, open/replace, restore, events, pipelining."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import redis.asyncio as aioredis

from kai_inventory.engine import simulate, views
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import HoldRequest, Inventory, schedule_of_hold


def req(sid: str, user: str = "u", a: int = 0, b: int = 2, **kw: Any) -> HoldRequest:
    return HoldRequest(sid, user, a, b, kw.pop("ttl_ms", 60_000), **kw)


async def states(inv: Inventory, layout: Any, a: int, b: int) -> list[str]:
    snap = await inv.snapshot(layout.schedule_id)
    assert snap is not None
    return views.seat_states(layout, snap, a, b)


def test_hold_ids_name_their_schedule() -> None:
    assert schedule_of_hold("S-1.abc_DEF-12") == "S-1"
    assert schedule_of_hold("nodot") is None
    assert schedule_of_hold("a.b.c") is None
    assert schedule_of_hold(".x") is None


async def test_segments_share_a_seat_but_never_a_leg(
    inventory: Inventory, make_layout: Any
) -> None:
    layout = make_layout("SEG")
    await inventory.open(layout)
    assert (await inventory.hold(req("SEG", a=0, b=2, seats=[5]))).code == Code.OK
    assert (await inventory.hold(req("SEG", a=2, b=4, seats=[5]))).code == Code.OK
    clash = await inventory.hold(req("SEG", a=1, b=3, seats=[5, 6]))
    assert clash.code == Code.SEATS_UNAVAILABLE
    assert clash.unavailable == [5]
    assert (await states(inventory, layout, 1, 3))[5:7] == ["held", "free"]


async def test_a_seat_asked_twice_or_off_the_train_is_refused(
    inventory: Inventory, make_layout: Any
) -> None:
    await inventory.open(make_layout("DUP"))
    for seats in ([3, 3], [3, 11, 3], [12], [-1]):
        assert (await inventory.hold(req("DUP", seats=seats))).code == Code.INVALID_ARGUMENT
    assert (await inventory.hold(req("DUP", seats=[3, 11]))).code == Code.OK


async def test_idempotency_replays_the_same_body_and_refuses_another(
    inventory: Inventory, make_layout: Any
) -> None:
    await inventory.open(make_layout("IDM"))
    first = await inventory.hold(req("IDM", seats=[1], idempotency_key="k1", body_hash="h1"))
    again = await inventory.hold(req("IDM", seats=[1], idempotency_key="k1", body_hash="h1"))
    other = await inventory.hold(req("IDM", seats=[2], idempotency_key="k1", body_hash="h2"))
    assert first.code == again.code == Code.OK
    assert again.replayed
    assert not first.replayed
    assert first.hold is not None
    assert again.hold is not None
    assert again.hold.hold_id == first.hold.hold_id
    assert other.code == Code.IDEMPOTENCY_CONFLICT
    # a failure is not recorded: the key stays free for a successful retry
    fail = await inventory.hold(req("IDM", seats=[1], idempotency_key="k2", body_hash="x"))
    assert fail.code == Code.SEATS_UNAVAILABLE
    ok = await inventory.hold(req("IDM", seats=[3], idempotency_key="k2", body_hash="y"))
    assert ok.code == Code.OK


async def test_a_hold_made_now_equals_the_hold_redis_stored_and_its_replay(
    inventory: Inventory, make_layout: Any
) -> None:
    await inventory.open(make_layout("NOW"))
    by_seats = req("NOW", user="seat", a=1, b=3, seats=[4, 2], idempotency_key="k", body_hash="h")
    held = []
    for ask in (by_seats, req("NOW", user="cls", a=0, b=4, seat_class="economy", count=2)):
        made = await inventory.hold(ask)  # the short reply: fields the caller knows are its own
        assert made.code == Code.OK
        assert made.hold is not None
        assert not made.replayed
        stored = await inventory.get_hold(made.hold.hold_id)
        assert stored is not None
        assert made.hold == stored
        assert (made.hold.user, made.hold.a, made.hold.b, made.hold.status) == (
            ask.user,
            ask.a,
            ask.b,
            "held",
        )
        assert made.hold.created_ms < made.hold.expires_ms
        held.append(made.hold)
    replay = await inventory.hold(by_seats)  # the long reply
    assert replay.replayed
    assert replay.hold == held[0]


async def test_rate_limit_counts_attempts_per_minute(
    inventory: Inventory, make_layout: Any
) -> None:
    await inventory.open(make_layout("RATE"))
    codes = [
        (await inventory.hold(req("RATE", seats=[i % 12], rate_per_min=3))).code for i in range(4)
    ]
    assert codes[:3] == [Code.OK] * 3
    limited = await inventory.hold(req("RATE", seats=[5], rate_per_min=3))
    assert limited.code == Code.RATE_LIMITED
    assert 0 < limited.retry_after_ms <= 60_000


async def test_live_hold_limit_frees_up_on_release(inventory: Inventory, make_layout: Any) -> None:
    await inventory.open(make_layout("LIM"))
    holds = [await inventory.hold(req("LIM", seats=[i], max_active=2)) for i in range(3)]
    assert [h.code for h in holds] == [Code.OK, Code.OK, Code.HOLD_LIMIT]
    assert holds[0].hold is not None
    assert (await inventory.release(holds[0].hold.hold_id, "u"))[0] == Code.OK
    assert (await inventory.hold(req("LIM", seats=[7], max_active=2))).code == Code.OK


async def test_sale_closes_on_cancel_and_at_departure(
    inventory: Inventory, make_layout: Any
) -> None:
    now = int(time.time() * 1000)
    layout = make_layout(
        "SALE", departures_ms=[now - 1, now + 60_000, now + 90_000, now + 9e6, now + 9e6]
    )
    await inventory.open(layout)
    assert (await inventory.hold(req("SALE", a=0, b=2, seats=[0]))).code == Code.SALE_CLOSED
    ok = await inventory.hold(req("SALE", a=1, b=2, seats=[0], ttl_ms=600_000))
    assert ok.hold is not None
    assert ok.hold.expires_ms == now + 60_000
    assert await inventory.set_status("SALE", "cancelled", 0, "flood") == Code.OK
    assert (await inventory.hold(req("SALE", a=2, b=3, seats=[0]))).code == Code.SALE_CLOSED
    snap = await inventory.snapshot("SALE")
    assert snap is not None
    assert snap.status == "cancelled"
    assert snap.reason == "flood"


async def test_release_rules(inventory: Inventory, make_layout: Any) -> None:
    await inventory.open(make_layout("REL"))
    out = await inventory.hold(req("REL", seats=[0]))
    assert out.hold is not None
    hid = out.hold.hold_id
    assert (await inventory.release(hid, "mallory"))[0] == Code.HOLD_NOT_FOUND
    code, hold = await inventory.release(hid, None)  # admin
    assert code == Code.OK
    assert hold is not None
    assert hold.status == "released"
    assert (await inventory.release(hid, "u"))[0] == Code.OK  # again: still fine
    assert (await inventory.confirm_begin(hid, "u"))[0] == Code.HOLD_RELEASED
    out2 = await inventory.hold(req("REL", seats=[1]))
    assert out2.hold is not None
    await inventory.confirm_begin(out2.hold.hold_id, "u")
    await inventory.confirm(out2.hold.hold_id, "BK9")
    assert await inventory.confirm(out2.hold.hold_id, "BK9") == Code.OK  # idempotent
    code, hold = await inventory.confirm_begin(out2.hold.hold_id, "u")
    assert code == Code.HOLD_CONFIRMED
    assert hold is not None
    assert hold.booking_number == "BK9"
    assert (await inventory.release(out2.hold.hold_id, "u"))[0] == Code.HOLD_CONFIRMED
    assert (await inventory.release("REL.nosuch", "u"))[0] == Code.HOLD_NOT_FOUND


async def test_open_same_layout_is_a_no_op_and_other_layout_needs_an_empty_schedule(
    inventory: Inventory, make_layout: Any
) -> None:
    layout = make_layout("OPN")
    assert (await inventory.open(layout)).created
    again = await inventory.open(layout)
    assert again.code == Code.OK
    assert not again.created
    assert not again.changed
    out = await inventory.hold(req("OPN", seats=[0]))
    assert out.hold is not None
    other = make_layout("OPN", coaches=[(1, "economy", ["1A", "1B"])])
    assert (await inventory.open(other)).code == Code.SCHEDULE_IN_USE
    await inventory.release(out.hold.hold_id, "u")
    replaced = await inventory.open(other)
    assert replaced.code == Code.OK
    assert replaced.changed
    assert (await inventory.layout("OPN")) == other
    snap = await inventory.snapshot("OPN")
    assert snap is not None
    assert snap.layout_id == other.layout_id


async def test_a_stale_layout_is_translated_by_seat_id_and_retried(
    inventory_factory: Any, make_layout: Any
) -> None:
    a: Inventory = await inventory_factory()
    b: Inventory = await inventory_factory()
    first = make_layout("STL")
    await a.open(first)
    assert await b.layout("STL") == first
    second = make_layout("STL", coaches=[(3, "economy", ["1A", "1B"]), (1, "executive", ["1A"])])
    assert (await a.open(second)).changed
    # b still holds the old layout: 3-1B was index 9 there, is index 2 now
    out = await b.hold(req("STL", seats=[first.seat_index("3-1B")]))
    assert out.code == Code.OK
    assert out.hold is not None
    assert out.hold.seats == [second.seat_index("3-1B")]


async def test_reopen_with_sold_seat_legs_revokes_holds_on_them(
    inventory: Inventory, make_layout: Any
) -> None:
    layout = make_layout("RO")
    await inventory.open(layout, sold=[(0, 1, [2])])
    assert (await states(inventory, layout, 0, 1))[2] == "sold"
    out = await inventory.hold(req("RO", a=1, b=3, seats=[2, 3]))
    assert out.hold is not None
    res = await inventory.open(layout, sold=[(2, 3, [3])])
    assert res.changed
    hold = await inventory.get_hold(out.hold.hold_id)
    assert hold is not None
    assert hold.status == "released"
    assert (await states(inventory, layout, 1, 3))[2:4] == ["free", "sold"]
    # the revoked hold's seat-legs are free again, the newly sold one stays taken
    assert (await inventory.hold(req("RO", a=2, b=3, seats=[3]))).code == Code.SEATS_UNAVAILABLE
    assert (await inventory.hold(req("RO", a=2, b=3, seats=[2]))).code == Code.OK


async def test_restore_replaces_sold_and_cancel_frees(
    inventory: Inventory, make_layout: Any
) -> None:
    layout = make_layout("RS")
    await inventory.open(layout, sold=[(0, 4, [0, 1])])
    assert await inventory.restore("RS", [(1, 2, [5])]) == Code.OK
    s = await states(inventory, layout, 0, 4)
    assert s[0:2] == ["free", "free"]
    assert s[5] == "sold"
    assert await inventory.restore("RS", [(0, 1, [0])], replace=False) == Code.OK
    assert (await states(inventory, layout, 0, 1))[0] == "sold"
    assert await inventory.cancel("RS", 1, 2, [5]) == Code.OK
    assert await inventory.cancel("RS", 1, 2, [5]) == Code.NOT_SOLD
    assert await inventory.restore("RS", [(3, 9, [0])]) == Code.INVALID_ARGUMENT


async def _bits(inv: Inventory, key: str, legs: int) -> set[tuple[int, int]]:
    """The (seat, leg) pairs set in a raw seat-group-major bitmap."""
    raw = await inv.redis.get(key) or b""
    return {
        (p // legs * 8 + q, p % legs) for p, v in enumerate(raw) for q in range(8) if v & 0x80 >> q
    }


async def test_taken_stays_sold_or_held_through_confirm_cancel_and_restore(
    inventory: Inventory, make_layout: Any
) -> None:
    """The taken bitmap is exactly sold plus the live holds' seat-legs after every change."""
    layout = make_layout("TK")
    sk, legs = inventory.keys.schedule("TK"), layout.n_legs

    async def check(held: set[tuple[int, int]]) -> set[tuple[int, int]]:
        sold = await _bits(inventory, sk.sold, legs)
        assert await _bits(inventory, sk.taken, legs) == sold | held
        assert not sold & held
        return sold

    await inventory.open(layout, sold=[(0, 1, [0])])
    a = await inventory.hold(req("TK", "ua", a=0, b=2, seats=[1]))
    b = await inventory.hold(req("TK", "ub", a=1, b=3, seats=[0]))
    assert a.hold is not None
    assert b.hold is not None
    b_legs = {(0, 1), (0, 2)}
    await check({(1, 0), (1, 1)} | b_legs)
    assert await inventory.confirm(a.hold.hold_id, "BK1") == Code.OK
    assert await check(b_legs) == {(0, 0), (1, 0), (1, 1)}
    # seat 0 is sold on leg 0 only: legs 1-2 stay held by b
    assert await inventory.cancel("TK", 0, 3, [0]) == Code.OK
    assert await check(b_legs) == {(1, 0), (1, 1)}
    assert (await states(inventory, layout, 1, 3))[0] == "held"
    # sold := exactly these; b's hold survives, a's seat-legs not listed are free again
    assert await inventory.restore("TK", [(0, 1, [1]), (3, 4, [0])]) == Code.OK
    assert await check(b_legs) == {(1, 0), (0, 3)}
    assert (await states(inventory, layout, 1, 2))[1] == "free"
    # OR'ed in over b's seat-leg: b is revoked, its other leg is free again
    assert await inventory.restore("TK", [(1, 2, [0])], replace=False) == Code.OK
    assert await check(set()) == {(1, 0), (0, 3), (0, 1)}


async def test_a_confirm_after_the_hold_expired_marks_its_seats_sold_and_taken(
    inventory: Inventory, make_layout: Any
) -> None:
    """The reconcile path: Postgres committed, the hold was reaped meanwhile."""
    layout = make_layout("TKX")
    sk, legs = inventory.keys.schedule("TKX"), layout.n_legs
    await inventory.open(layout)
    out = await inventory.hold(req("TKX", a=0, b=2, seats=[4], ttl_ms=1_000))
    assert out.hold is not None
    await inventory.advance_clock("TKX", 5_000)
    assert await inventory.reap("TKX") == 1
    assert await _bits(inventory, sk.taken, legs) == set()
    assert await inventory.confirm(out.hold.hold_id, "BK1") == Code.OK
    assert await _bits(inventory, sk.sold, legs) == {(4, 0), (4, 1)}
    assert await _bits(inventory, sk.taken, legs) == {(4, 0), (4, 1)}
    assert (await inventory.hold(req("TKX", a=1, b=2, seats=[4]))).code == Code.SEATS_UNAVAILABLE


async def test_best_fit_prefers_seats_whose_neighbouring_legs_are_taken(
    inventory: Inventory, make_layout: Any
) -> None:
    layout = make_layout("BF")
    await inventory.open(layout, sold=[(0, 1, [9]), (2, 4, [9])])  # seat 9 free only on leg 1
    best = await inventory.hold(req("BF", a=1, b=2, seat_class="economy", count=1))
    first = await inventory.hold(
        req("BF", a=1, b=2, seat_class="economy", count=1, strategy="first")
    )
    assert best.hold is not None
    assert best.hold.seats == [9]
    assert first.hold is not None
    assert first.hold.seats == [4]


async def test_best_fit_compares_only_the_first_three_cars_that_can_seat_the_group(
    inventory: Inventory, make_layout: Any
) -> None:
    # five economy cars of 4 seats (0..19); only seat 17 (car 5) is free on exactly leg 1, so it
    # scores best, but cars 1..3 can seat the party already: the choice stays among them
    coaches = [(car, "economy", ["1A", "1B", "1C", "1D"]) for car in range(1, 6)]
    layout = make_layout("K3", coaches=coaches)
    await inventory.open(layout, sold=[(0, 1, [17]), (2, 4, [17])])
    out = await inventory.hold(req("K3", a=1, b=2, seat_class="economy", count=1))
    assert out.hold is not None
    assert out.hold.seats == [0]
    # with cars 1..4 full on leg 1, car 5 is among the first cars with room: its best seat wins
    await inventory.restore("K3", [(0, 1, [17]), (2, 4, [17]), (1, 2, list(range(16)))])
    out = await inventory.hold(req("K3", user="v", a=1, b=2, seat_class="economy", count=1))
    assert out.hold is not None
    assert out.hold.seats == [17]


async def test_insufficient_inventory_counts_every_free_seat_of_the_class(
    inventory: Inventory, make_layout: Any
) -> None:
    coaches = [
        (car, "economy", [f"{r}{c}" for r in range(1, 6) for c in "AB"]) for car in (1, 2, 3)
    ]
    layout = make_layout("CNT", coaches=coaches)  # 3 cars of 10 seats
    taken = [
        i for i in range(30) if i % 2 == 0 or i in (1, 11)
    ]  # free: 13 odd seats, none adjacent
    await inventory.open(layout, sold=[(0, 4, taken)])
    out = await inventory.hold(req("CNT", a=0, b=4, seat_class="economy", count=14))
    assert out.code == Code.INSUFFICIENT_INVENTORY
    assert out.available == 13
    two = await inventory.hold(req("CNT", a=0, b=4, seat_class="economy", count=2))
    assert two.hold is not None  # no two adjacent: two seats of one car, lowest first on ties
    assert two.hold.seats == [3, 5]


async def test_class_holds_keep_a_party_together_in_one_car(
    inventory: Inventory, make_layout: Any
) -> None:
    layout = make_layout("CAR")
    await inventory.open(layout, sold=[(0, 4, [4, 6, 8])])  # car 2 has 5 and 7, car 3 has 9..11
    out = await inventory.hold(req("CAR", seat_class="economy", count=3))
    assert out.hold is not None
    assert out.hold.seats == [9, 10, 11]
    two = await inventory.hold(req("CAR", seat_class="economy", count=2))
    assert two.hold is not None
    assert two.hold.seats == [5, 7]
    none = await inventory.hold(req("CAR", seat_class="economy", count=1))
    assert none.code == Code.INSUFFICIENT_INVENTORY
    assert none.available == 0
    nope = await inventory.hold(req("CAR", seat_class="sleeper", count=1))
    assert nope.code == Code.INSUFFICIENT_INVENTORY


async def test_every_change_bumps_the_version_and_publishes_one_event(
    inventory: Inventory, make_layout: Any, redis_url: str
) -> None:
    layout = make_layout("EV")
    sub_client = aioredis.from_url(redis_url)
    pubsub = sub_client.pubsub()
    await pubsub.subscribe(inventory.keys.schedule("EV").channel)
    try:
        await inventory.open(layout)
        out = await inventory.hold(req("EV", a=1, b=3, seats=[4, 5]))
        assert out.hold is not None
        await inventory.set_status("EV", "delayed", 15, "signal")
        await inventory.release(out.hold.hold_id, "u")
        events = []
        deadline = time.monotonic() + 5
        while len(events) < 4 and time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if msg is not None:  # None also stands for the swallowed subscribe confirmation
                events.append(json.loads(msg["data"]))
    finally:
        await pubsub.aclose()
        await sub_client.aclose()
    assert events[0]["reset"] == 1
    assert events[1]["ch"] == [[1, 3, [4, 5]]]
    assert events[2] == {"v": events[1]["v"] + 1, "st": "delayed", "delay": 15, "reason": "signal"}
    assert events[3]["ch"] == [[1, 3, [4, 5]]]
    assert events[3]["v"] == events[2]["v"] + 1


async def test_calls_in_one_tick_share_one_round_trip(
    inventory: Inventory, make_layout: Any
) -> None:
    await inventory.open(make_layout("PIPE"))
    before = inventory.pipeline.batches
    outs = await asyncio.gather(
        *(inventory.hold(req("PIPE", user=f"u{i}", seats=[i])) for i in range(10))
    )
    assert all(o.code == Code.OK for o in outs)
    assert inventory.pipeline.batches - before == 1
    # an error in one call reaches only that caller
    results = await asyncio.gather(
        inventory.pipeline.execute("INCR", inventory.keys.schedule("PIPE").layout),
        inventory.pipeline.execute("PING"),
        return_exceptions=True,
    )
    assert isinstance(results[0], Exception)
    assert results[1] in (True, b"PONG")


async def test_open_schedules_epoch_and_live_hold_count(
    inventory: Inventory, make_layout: Any
) -> None:
    assert not await inventory.epoch_present()
    await inventory.set_epoch()
    assert await inventory.epoch_present()
    await inventory.open(make_layout("G1"))
    await inventory.open(make_layout("G2"))
    assert await inventory.open_schedule_ids() == ["G1", "G2"]
    await inventory.hold(req("G1", seats=[0]))
    await inventory.hold(req("G2", seats=[0]))
    assert await inventory.live_holds() == 2


def test_phased_demand_sells_short_journeys_first_then_long_ones() -> None:
    stream = simulate.make_phased_stream(seed=1, count=100, legs=9)
    assert stream == simulate.make_phased_stream(seed=1, count=100, legs=9)
    assert all(1 <= b - a <= 3 for a, b, _ in stream[:70])
    assert all(b - a >= 5 for a, b, _ in stream[70:])
    assert all(0 <= a < b <= 9 and n in (1, 2) for a, b, n in stream)


def test_simulate_reports_both_strategies_on_the_same_stream(redis_url: str) -> None:
    import asyncio as _asyncio

    results = _asyncio.run(simulate.simulate(redis_url, seed=3, requests=150))
    assert [r.strategy for r in results] == ["best", "first"]
    for r in results:
        assert r.requests == 150
        assert 0 < r.journeys_sold <= 150
        assert r.seat_legs_sold + r.seat_legs_free == r.capacity_seat_legs == 500 * 9
        assert 0 <= r.stranded_seat_legs <= r.seat_legs_free
    assert "| best |" in simulate.format_table(results)
