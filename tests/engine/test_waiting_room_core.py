"""The waiting room's Redis core, on a real Redis (isolated by the random key prefix)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from kai_inventory.engine.connection import client_for_url
from kai_inventory.engine.keys import Keys, SaleKeys
from kai_inventory.engine.waiting_room import (
    AdmissionTokens,
    QCode,
    SaleConfig,
    TickResult,
    WaitingRoom,
    run_admission,
)
from kai_inventory.resources import lua_dir

SECRET = "test-secret-0123456789abcdef"
Factory = Callable[[], Awaitable[WaitingRoom]]


@pytest.fixture(params=["single", "cluster"])
async def rooms(
    request: pytest.FixtureRequest, redis_url: str, key_prefix: str
) -> AsyncIterator[Factory]:
    """Creates WaitingRooms on separate connections (as separate processes would have), on a
    single Redis and on a 3-master Redis Cluster (one hash tag per sale)."""
    url = redis_url if request.param == "single" else request.getfixturevalue("redis_cluster").url
    clients: list[aioredis.Redis] = []

    async def create() -> WaitingRoom:
        client: aioredis.Redis = client_for_url(url)  # type: ignore[assignment]
        clients.append(client)
        room = WaitingRoom(client, Keys(key_prefix), SECRET)
        await room.scripts.load()
        return room

    yield create
    for client in clients:
        await client.aclose()


async def _sale(
    room: WaitingRoom,
    sale_id: str = "lebaran",
    *,
    opens_in_ms: int = 0,
    lasts_ms: int = 3_600_000,
    rate: int = 1000,
    max_admitted: int = 100_000,
    idle_ms: int = 300_000,
    ttl_ms: int = 900_000,
    schedules: tuple[str, ...] = ("S1",),
) -> SaleConfig:
    now = await room.now_ms()
    sale = SaleConfig(
        sale_id=sale_id,
        schedules=list(schedules),
        opens_ms=now + opens_in_ms,
        closes_ms=now + opens_in_ms + lasts_ms,
        admit_per_s=rate,
        max_admitted=max_admitted,
        idle_ms=idle_ms,
        admission_ttl_ms=ttl_ms,
    )
    result = await room.put_sale(sale)
    assert result.code == QCode.OK
    return sale


async def _sleep_until(room: WaitingRoom, at_ms: int) -> None:
    while (now := await room.now_ms()) < at_ms:
        await asyncio.sleep((at_ms - now) / 1000 + 0.001)


async def _drain(room: WaitingRoom, sale_id: str, want: int) -> list[str]:
    order: list[str] = []
    for _ in range(200):
        result = await room.tick(sale_id)
        order += result.users
        if len(order) >= want:
            return order
        await asyncio.sleep(0.01)
    raise AssertionError(f"admitted {len(order)} of {want}")


def _spearman(xs: list[int], ys: list[int]) -> float:
    n = len(xs)
    d2 = sum((x - y) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_queue_codes_mirror_the_lua_codes() -> None:
    text = (lua_dir() / "lib" / "queue_codes.lua").read_text()
    lua = {name: int(v) for name, v in re.findall(r"local Q_(\w+) = (-?\d+)", text)}
    assert lua == {code.name: code.value for code in QCode}


async def test_pre_opening_joiners_are_admitted_in_an_order_unrelated_to_join_order(
    rooms: Factory,
) -> None:
    room = await rooms()
    sale = await _sale(room, opens_in_ms=600, rate=100_000)
    early = [f"early{i}" for i in range(1000)]
    for i in range(0, 1000, 100):  # joins in order, a batch per round trip
        places = await asyncio.gather(*(room.join(sale.sale_id, u) for u in early[i : i + 100]))
        assert all(p.code == QCode.OK and not p.admitted for p in places)
    await _sleep_until(room, sale.opens_ms)
    late = [f"late{i}" for i in range(200)]
    for user in late:  # after the opening, one by one: first come first served
        assert (await room.join(sale.sale_id, user)).code == QCode.OK

    order = await _drain(room, sale.sale_id, 1200)

    assert set(order[:1000]) == set(early)
    assert order[1000:] == late
    admitted_at = {u: i for i, u in enumerate(order)}
    rho = _spearman(list(range(1000)), [admitted_at[u] for u in early])
    # a random permutation of 1000 has sd(rho) ~ 0.032: |rho| < 0.15 is a 4.7 sigma bound
    assert abs(rho) < 0.15, rho
    # ... and the order is not some fixed function of the join order either
    first_decile = sum(1 for u in early[:100] if admitted_at[u] < 100)
    assert first_decile < 35  # ~10 expected by chance; join order preserved would give 100


async def test_joining_again_returns_the_same_place(rooms: Factory) -> None:
    room = await rooms()
    sale = await _sale(room, opens_in_ms=60_000)
    first = await room.join(sale.sale_id, "budi")
    others = [await room.join(sale.sale_id, f"u{i}") for i in range(20)]
    again = await room.join(sale.sale_id, "budi")
    assert first.created
    assert not again.created
    assert again.ticket == first.ticket
    assert len({p.ticket for p in [first, *others]}) == 21
    status = await room.status(sale.sale_id, "budi")
    assert status.ticket == first.ticket
    assert not status.admitted
    positions = sorted(
        [(await room.status(sale.sale_id, p.user)).position for p in others] + [status.position]
    )
    assert positions == list(range(1, 22))
    assert status.estimated_wait_s >= 59  # waits for the opening at least


async def test_three_concurrent_admission_loops_admit_exactly_admit_per_s_in_total(
    rooms: Factory,
) -> None:
    setup = await rooms()
    rate = 200
    sale = await _sale(setup, opens_in_ms=300, rate=rate)
    await asyncio.gather(*(setup.join(sale.sale_id, f"u{i}") for i in range(2000)))
    loops = [await rooms() for _ in range(3)]
    per_loop: list[list[TickResult]] = [[], [], []]
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_admission(room, stop, interval_s=0.02, on_tick=seen.extend))
        for room, seen in zip(loops, per_loop, strict=True)
    ]
    await _sleep_until(setup, sale.opens_ms + 1500)
    stop.set()
    await asyncio.gather(*tasks)

    ticks = [t for seen in per_loop for t in seen]
    admitted = sum(t.admitted for t in ticks)
    last = max(t.now_ms for t in ticks)
    assert {t.sale_id for t in ticks} == {sale.sale_id}
    # all three loops ran throughout; which of them wins a given token is up to the scheduler
    assert all(len(seen) > 10 for seen in per_loop)
    # the bucket is filled in milli-tokens from Redis TIME: exactly 1 x rate, not 3 x rate
    assert admitted == (last - sale.opens_ms) * rate // 1000
    place = await setup.status(sale.sale_id, "u0")
    assert place.popped == admitted
    assert place.waiting + place.admitted_count == 2000


async def test_never_more_than_max_admitted_at_once(rooms: Factory) -> None:
    room = await rooms()
    sale = await _sale(room, rate=100_000, max_admitted=50)
    await asyncio.gather(*(room.join(sale.sale_id, f"u{i}") for i in range(300)))
    await asyncio.sleep(0.05)
    results = [await room.tick(sale.sale_id) for _ in range(5)]
    assert sum(r.admitted for r in results) == 50
    assert results[-1].admitted_now == 50
    assert results[-1].waiting == 250


async def test_an_idle_admission_is_returned_and_its_slot_goes_to_the_next(
    rooms: Factory,
) -> None:
    room = await rooms()
    sale = await _sale(room, rate=100_000, max_admitted=2, idle_ms=400)
    for user in ("active", "idle", "next"):
        await room.join(sale.sale_id, user)
    await asyncio.sleep(0.03)
    first = await room.tick(sale.sale_id)
    assert sorted(first.users) == ["active", "idle"]
    active = await room.status(sale.sale_id, "active")
    token = room.token_for(active)
    assert token is not None
    for _ in range(6):  # "active" keeps making requests (hold attempts) for 0.6 s
        await asyncio.sleep(0.1)
        assert (await room.check_hold("S1", "active", token)).allowed
    second = await room.tick(sale.sale_id)
    assert second.returned == 1
    assert second.users == ["next"]
    assert (await room.status(sale.sale_id, "idle")).code == QCode.NOT_IN_QUEUE
    assert (await room.status(sale.sale_id, "active")).admitted


async def test_an_expired_admission_is_returned_and_its_token_stops_working(
    rooms: Factory,
) -> None:
    room = await rooms()
    sale = await _sale(room, rate=100_000, max_admitted=1, ttl_ms=300)
    await room.join(sale.sale_id, "budi")
    await room.join(sale.sale_id, "siti")
    await asyncio.sleep(0.03)
    assert (await room.tick(sale.sale_id)).users == ["budi"]
    budi = await room.status(sale.sale_id, "budi")
    raw_token = room.token_for(budi)
    assert raw_token is not None
    assert (await room.check(sale.sale_id, "budi", budi.serial)).code == QCode.OK
    await asyncio.sleep(0.35)
    # past its ttl: refused even before the tick took it back
    assert (await room.check(sale.sale_id, "budi", budi.serial)).code == QCode.ADMISSION_EXPIRED
    assert (await room.tick(sale.sale_id)).users == ["siti"]
    # budi joins again (at the back) and is admitted again later: the old token stays dead
    rejoined = await room.join(sale.sale_id, "budi")
    assert rejoined.created
    assert rejoined.ticket != budi.ticket
    await asyncio.sleep(0.35)
    assert (await room.tick(sale.sale_id)).users == ["budi"]
    again = await room.status(sale.sale_id, "budi")
    assert (await room.check(sale.sale_id, "budi", budi.serial)).code == QCode.NOT_ADMITTED
    assert (await room.check(sale.sale_id, "budi", again.serial)).code == QCode.OK


async def test_hold_check_needs_the_users_own_live_admission_while_a_sale_is_active(
    rooms: Factory,
) -> None:
    room = await rooms()
    assert (await room.check_hold("S1", "budi", None)).allowed  # no sale: no check
    sale = await _sale(room, rate=100_000, schedules=("S1", "S2"))
    assert (await room.check_hold("S9", "budi", None)).allowed  # not in the sale
    denied = await room.check_hold("S1", "budi", None)
    assert not denied.allowed
    assert denied.sale_id == sale.sale_id
    assert denied.reason == "missing"
    await room.join(sale.sale_id, "budi")
    await room.join(sale.sale_id, "siti")
    await asyncio.sleep(0.02)
    await room.tick(sale.sale_id)
    token = room.token_for(await room.status(sale.sale_id, "budi"))
    assert token is not None
    assert (await room.check_hold("S2", "budi", token)).allowed
    assert (await room.check_hold("S2", "siti", token)).reason == "other_user"
    assert (await room.check_hold("S2", "budi", token[:-2] + "xx")).reason == "invalid"
    other = AdmissionTokens("another-secret-0123456789")
    forged = other.mint("budi", sale.sale_id, 1, sale.closes_ms)
    assert (await room.check_hold("S2", "budi", forged)).reason == "invalid"


def test_admission_tokens_are_bound_and_short_lived() -> None:
    tokens = AdmissionTokens(SECRET)
    token = tokens.mint("budi", "lebaran", 7, 2_000_000_000_000)
    claims = tokens.verify(token, now_s=1_999_999_000)
    assert claims is not None
    assert (claims.user, claims.sale_id, claims.serial) == (
        "budi",
        "lebaran",
        7,
    )
    assert tokens.verify(token, now_s=2_000_000_000.5) is None
    assert tokens.mint("budi", "lebaran", 7, 2_000_000_000_000) == token  # same admission
    assert AdmissionTokens("another-secret-0123456789").verify(token, now_s=0) is None


async def test_a_schedule_is_in_at_most_one_active_sale(rooms: Factory) -> None:
    room = await rooms()
    first = await _sale(room, "first", schedules=("S1", "S2"))
    now = await room.now_ms()
    clash = SaleConfig("second", ["S3", "S2"], now, now + 60_000, 10, 10, 1000, 1000)
    result = await room.put_sale(clash)
    assert result.code == QCode.SALE_CONFLICT
    assert (result.conflict_schedule, result.conflict_sale) == ("S2", "first")
    assert await room.get_sale("second") is None
    # the first sale lets S2 go: now the second may take it
    let_go = await room.put_sale(SaleConfig(**{**_fields(first), "schedules": ["S1"]}))
    assert let_go.changed
    assert (await room.put_sale(clash)).created
    await room.refresh_directory()
    assert room.active_sale("S2") == "second"
    assert room.active_sale("S1") == "first"
    assert sorted(room.active_sales()) == ["first", "second"]


async def test_putting_a_sale_twice_is_unchanged_and_opens_at_is_fixed_once_open(
    rooms: Factory,
) -> None:
    room = await rooms()
    sale = await _sale(room)
    again = await room.put_sale(sale)
    assert again.code == QCode.OK
    assert not again.created
    assert not again.changed
    assert await room.get_sale(sale.sale_id) == sale
    moved = await room.put_sale(SaleConfig(**{**_fields(sale), "opens_ms": sale.opens_ms + 5}))
    assert moved.code == QCode.INVALID_ARGUMENT
    wider = await room.put_sale(SaleConfig(**{**_fields(sale), "max_admitted": 7}))
    assert wider.changed
    assert (await room.get_sale(sale.sale_id)).max_admitted == 7


def _fields(sale: SaleConfig) -> dict[str, object]:
    return {f: getattr(sale, f) for f in sale.__struct_fields__}


async def test_joining_a_closed_or_unknown_sale_is_refused(rooms: Factory) -> None:
    room = await rooms()
    assert (await room.join("nope", "budi")).code == QCode.SALE_NOT_FOUND
    sale = await _sale(room, lasts_ms=50)
    await asyncio.sleep(0.1)
    assert (await room.join(sale.sale_id, "budi")).code == QCode.SALE_NOT_OPEN


async def test_watchers_follow_positions_from_the_popped_counter(rooms: Factory) -> None:
    room = await rooms()
    sale = await _sale(room, opens_in_ms=200, rate=100)
    users = [f"u{i}" for i in range(50)]
    for user in users:
        await room.join(sale.sale_id, user)
    await _sleep_until(room, sale.opens_ms + 1)
    base = {u: (await room.status(sale.sale_id, u)).base for u in users}
    await asyncio.sleep(0.1)
    tick = await room.tick(sale.sale_id)
    assert 5 <= tick.admitted <= 40
    watch = await room.watch(sale.sale_id, [*users, "stranger"])
    assert watch.popped == tick.admitted
    for w in watch.users[:-1]:
        if w.rank >= 0:
            assert w.rank == base[w.user] - watch.popped
        else:
            assert w.rank == -2
            assert w.user in tick.users
            assert w.serial > 0
    assert watch.users[-1].rank == -1
    assert SaleKeys.of(room.keys, "x").cfg.endswith(":{q:x}:cfg")
