"""A hold past its expires_at is never confirmable, and its seats come back on their own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kai_inventory.engine import views
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import HoldRequest, Inventory
from kai_inventory.engine.reaper import run_reaper


async def test_expired_hold_cannot_be_confirmed_and_its_seats_free_within_a_second(
    inventory_factory: Any, make_layout: Any
) -> None:
    inv: Inventory = await inventory_factory()
    observer: Inventory = await inventory_factory()  # another process's view, no writes
    layout = make_layout("EXP")
    await inv.open(layout)
    out = await inv.hold(HoldRequest("EXP", "u1", 0, 4, 1000, seats=[0, 1]))
    assert out.code == Code.OK
    assert out.hold is not None
    hold_id = out.hold.hold_id

    stop = asyncio.Event()
    reaper = asyncio.create_task(run_reaper(inv, stop, interval_s=0.25))
    try:
        await asyncio.sleep(1.05)
        code, _ = await inv.confirm_begin(hold_id, "u1")
        assert code == Code.HOLD_EXPIRED
        # seats freed by the reaper alone: poll the raw bitmap (no script, no reap on read)
        deadline = time.monotonic() + 1.0
        sk = observer.keys.schedule("EXP")
        while True:
            held = await observer.redis.get(sk.taken)
            if not any(held):
                break
            assert time.monotonic() < deadline, "seats still held 1 s after expiry"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await reaper
    snap = await observer.snapshot("EXP")
    assert snap is not None
    assert views.seat_states(layout, snap, 0, 4)[:2] == ["free", "free"]
    hold = await inv.get_hold(hold_id)
    assert hold is not None
    assert hold.status == "expired"


async def test_the_reaper_alone_frees_an_idle_schedule_within_one_second(
    inventory_factory: Any, make_layout: Any
) -> None:
    inv: Inventory = await inventory_factory()
    layout = make_layout("IDLE")
    await inv.open(layout)
    out = await inv.hold(HoldRequest("IDLE", "u1", 1, 3, 1000, seat_class="economy", count=2))
    assert out.hold is not None
    sk = inv.keys.schedule("IDLE")
    stop = asyncio.Event()
    reaper = asyncio.create_task(run_reaper(inv, stop, interval_s=0.25))
    try:
        expires_s = out.hold.expires_ms / 1000
        while any(await inv.redis.get(sk.taken)):
            assert time.time() < expires_s + 1.0, "not reaped within 1 s"
            await asyncio.sleep(0.05)
        assert time.time() >= expires_s - 0.05  # and not before its time
    finally:
        stop.set()
        await reaper
    assert await inv.redis.zscore(inv.keys.due, "IDLE") is None


async def test_a_confirming_hold_survives_its_expiry_until_the_grace_ends(
    inventory: Inventory, make_layout: Any
) -> None:
    layout = make_layout("GRACE")
    await inventory.open(layout)
    out = await inventory.hold(HoldRequest("GRACE", "u1", 0, 2, 20_000, seats=[3]))
    assert out.hold is not None
    code, _ = await inventory.confirm_begin(out.hold.hold_id, "u1", grace_ms=60_000)
    assert code == Code.OK
    await inventory.advance_clock("GRACE", 30_000)  # past expires, inside the grace
    assert await inventory.reap("GRACE") == 0
    assert await inventory.confirm(out.hold.hold_id, "BK1") == Code.OK
    snap = await inventory.snapshot("GRACE")
    assert snap is not None
    assert views.seat_states(layout, snap, 0, 2)[3] == "sold"


async def test_confirm_abort_past_expiry_expires_the_hold(
    inventory: Inventory, make_layout: Any
) -> None:
    await inventory.open(make_layout("ABORT"))
    out = await inventory.hold(HoldRequest("ABORT", "u1", 0, 2, 20_000, seats=[3]))
    assert out.hold is not None
    assert (await inventory.confirm_begin(out.hold.hold_id, "u1"))[0] == Code.OK
    await inventory.advance_clock("ABORT", 25_000)
    assert await inventory.confirm_abort(out.hold.hold_id) == Code.HOLD_EXPIRED
    assert (await inventory.confirm_begin(out.hold.hold_id, "u1"))[0] == Code.HOLD_EXPIRED


async def test_a_hold_frees_seats_whose_hold_expired_without_waiting_for_the_reaper(
    inventory: Inventory, make_layout: Any
) -> None:
    """The hold path reaps on write from the meta's earliest-deadline hint: the hint follows
    holds that end early, deadlines lowered by a confirm's grace and reaps (no reaper runs)."""
    layout = make_layout("HINT")
    await inventory.open(layout)

    async def hold(user: str, seats: list[int], ttl_ms: int) -> str:
        out = await inventory.hold(HoldRequest("HINT", user, 0, 4, ttl_ms, seats=seats))
        assert out.hold is not None, out
        return out.hold.hold_id

    early = await hold("u1", [0], 10_000)
    await hold("u2", [1], 60_000)
    assert (await inventory.release(early, None))[
        0
    ] == Code.OK  # the hint is now below every deadline
    await inventory.advance_clock("HINT", 11_000)
    await hold("u3", [2], 120_000)  # reaps nothing, resets the hint to u2's deadline
    await inventory.advance_clock("HINT", 50_000)  # u2's hold is past its deadline
    assert (
        await inventory.hold(HoldRequest("HINT", "u4", 0, 4, 60_000, seats=[1]))
    ).code == Code.OK

    grace = await hold("u5", [5], 600_000)
    code, _ = await inventory.confirm_begin(
        grace, "u5", grace_ms=5_000
    )  # earlier than any deadline
    assert code == Code.OK
    await inventory.advance_clock("HINT", 6_000)
    assert (
        await inventory.hold(HoldRequest("HINT", "u6", 0, 4, 60_000, seats=[5]))
    ).code == Code.OK
    held = await inventory.get_hold(grace)
    assert held is not None
    assert held.status == "expired"
