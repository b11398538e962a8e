"""The coalescing window as a delivery deadline: a feed's tick fires early by its tick time.

The timer checks run against the real fan-out (real Redis, real events): the delay is read
from the armed timer's ``when()`` bracketed by loop times taken around the moment it was
armed, so they hold however fast or slow the machine is.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from kai_inventory.engine.inventory import Inventory
from kai_inventory.engine.layout import Layout
from kai_inventory.ws import WS_STATE
from kai_inventory.ws.fanout import tick_delay
from kai_inventory.ws.hub import Feed
from tests.ws.conftest import Server, hold, recv, subscribe

WINDOW_MS = 200
WINDOW = WINDOW_MS / 1000


@pytest.mark.parametrize(
    ("tick_s", "waited", "expected"),
    [
        (0.0, 0.0, 0.200),  # nothing measured yet: the full window
        (0.001, 0.0, 0.199),  # a small feed: the window, in effect
        (0.040, 0.0, 0.160),  # a large feed: fire early by the tick's duration
        (0.050, 0.0, 0.150),  # exactly the cap
        (0.060, 0.0, 0.150),  # 5,000 subscribers: capped at a quarter window
        (0.500, 0.0, 0.150),  # a stalled tick: never more than a quarter window early
        (-0.010, 0.0, 0.200),  # a nonsense duration leads by nothing
        (0.040, 0.100, 0.060),  # re-armed after a tick, part of the window already gone
        (0.040, 0.300, 0.0),  # past the deadline: fire now, never a negative delay
    ],
)
def test_tick_delay_is_the_window_less_the_tick_duration_capped_at_a_quarter_window(
    tick_s: float, waited: float, expected: float
) -> None:
    assert tick_delay(WINDOW, tick_s, waited) == pytest.approx(expected, abs=1e-9)


def test_a_zero_window_fires_at_once_whatever_the_tick_duration() -> None:
    assert tick_delay(0.0, 0.060) == 0.0


async def _armed_by(feed: Feed, change: asyncio.Task[str]) -> tuple[float, float, float]:
    """(loop time before, the timer's when(), loop time after) for the timer ``change`` arms."""
    loop = asyncio.get_running_loop()
    assert feed.timer is None
    give_up = loop.time() + 5
    while loop.time() < give_up:
        before = loop.time()
        await asyncio.sleep(0.001)
        after = loop.time()
        if feed.timer is not None:
            when = feed.timer.when()
            await change
            return before, when, after
    raise AssertionError("no tick was armed")


async def _subscribed_feed(
    server_start: Server, session: aiohttp.ClientSession, coalesce_ms: int
) -> tuple[aiohttp.ClientWebSocketResponse, Feed]:
    server = await server_start(ws_coalesce_ms=coalesce_ms)
    ws = await session.ws_connect(server.make_url("/v1/ws"))
    await subscribe(ws)
    fanout = server.app[WS_STATE].fanout
    assert fanout is not None
    return ws, fanout.hub.feeds["TST-1"]


@pytest.mark.parametrize(
    ("tick_s", "expected"),
    [(0.040, WINDOW - 0.040), (10.0, WINDOW * 3 / 4)],
    ids=["known-duration", "capped-at-a-quarter-window"],
)
async def test_a_feed_fires_its_measured_tick_duration_early_by_at_most_a_quarter_window(
    ws_server: Server,
    session: aiohttp.ClientSession,
    schedule: Layout,
    inventory: Inventory,
    tick_s: float,
    expected: float,
) -> None:
    ws, feed = await _subscribed_feed(ws_server, session, WINDOW_MS)
    async with ws:
        feed.tick_s = tick_s
        change = asyncio.create_task(hold(inventory, schedule, ["1-1A"]))
        before, when, after = await _armed_by(feed, change)
        assert before + expected - 1e-6 <= when <= after + expected + 1e-6
        update = await recv(ws)
        assert update["seats"] == {"1-1A": "held"}


async def test_a_small_feed_measures_its_ticks_and_waits_the_window_less_that(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    ws, feed = await _subscribed_feed(ws_server, session, WINDOW_MS)
    async with ws:
        assert feed.tick_s == 0.0
        await hold(inventory, schedule, ["1-1A"])
        assert (await recv(ws))["seats"] == {"1-1A": "held"}
        measured = feed.tick_s
        assert measured > 0.0, "the tick that sent a frame recorded its duration"
        change = asyncio.create_task(hold(inventory, schedule, ["1-1B"]))
        before, when, after = await _armed_by(feed, change)
        expected = WINDOW - min(measured, WINDOW / 4)
        assert before + expected - 1e-6 <= when <= after + expected + 1e-6
        assert (await recv(ws))["seats"] == {"1-1B": "held"}


async def test_changes_inside_the_shortened_window_still_merge_into_one_update(
    ws_server: Server, session: aiohttp.ClientSession, schedule: Layout, inventory: Inventory
) -> None:
    ws, feed = await _subscribed_feed(ws_server, session, 400)
    async with ws:
        feed.tick_s = 10.0  # the tick fires at 300 ms, a quarter window early
        for seat in ("1-1A", "1-1B", "2-1A"):
            await hold(inventory, schedule, [seat], user=seat)
        update = await recv(ws)
        assert update["seats"] == {"1-1A": "held", "1-1B": "held", "2-1A": "held"}
