"""Degrade, never hang, on the Postgres side: the pool's deadlines and the "postgres" circuit
breaker (kai_inventory/persist/db.py, kai_inventory/sales/core.py).

The app runs in process (the real ``create_app``, shared Redis under the test's prefix, the
session's migrated database) with its Postgres link through the fault proxy, so the test can
blackhole Postgres (accept, never answer) and look at the one breaker of the process. The
breaker gets a clock the test moves, so "open" and "half-open" are states the test sets, not
races with a one-second cooldown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from kai_inventory.api.auth import issue_token
from kai_inventory.app import create_app
from kai_inventory.context import CTX
from kai_inventory.persist import bookings as pg_bookings
from kai_inventory.resilience import BREAKER_COOLDOWN_S, CircuitBreaker
from kai_inventory.sales import Sales
from kai_inventory.settings import Settings
from tests.faults.conftest import SECRET, STATIONS, schedule_body
from tests.faults.proxy import FaultProxy

# A liveness bound, generous for a loaded CI machine: the pool's former command timeout alone
# was 10 s; the deadlines answer in 1-2 s.
ANSWERED_WITHIN_S = 5.0
SEAT = "1-1A"

Client = TestClient[web.Request, web.Application]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _headers(user: str, scope: str = "inventory:hold") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, user, scope, 3600)}"}


def _through(dsn: str, port: int) -> str:
    head, _, tail = dsn.partition("@")
    return f"{head}@127.0.0.1:{port}/{tail.partition('/')[2]}"


@pytest.fixture
def pg_proxy(migrated_dsn: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(int(migrated_dsn.rpartition(":")[2].partition("/")[0])).start()
    yield proxy
    proxy.stop()  # before the app closes: its pool then meets reset links, not a blackhole


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[Client]],
    settings: Settings,
    migrated_dsn: str,
    pg_proxy: FaultProxy,
) -> Client:
    app = create_app(
        settings.replace(
            database_url=_through(migrated_dsn, pg_proxy.port),
            jwt_secret=SECRET,
            log_level="WARNING",
            reconcile_interval_s=3600,  # only the start-up pass: the test's calls are the probes
        )
    )
    started = await aiohttp_client(app)
    sales: Sales = started.app[CTX].sales
    deadline = time.monotonic() + 30
    while sales._reconciled_at is None:  # the start-up reconcile done: it calls Postgres too
        assert time.monotonic() < deadline, "the start-up reconcile did not finish"
        await asyncio.sleep(0.05)
    return started


class Answer:
    def __init__(self, status: int, body: Any, retry_after: str | None, took_s: float) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.took_s = took_s


async def _call(client: Client, method: str, path: str, **kw: Any) -> Answer:
    started = time.monotonic()
    async with client.request(method, path, **kw) as response:
        body = await response.json(content_type=None)
        return Answer(
            response.status, body, response.headers.get("Retry-After"), time.monotonic() - started
        )


async def _schedule(client: Client) -> str:
    schedule_id = "B" + str(time.monotonic_ns())[-10:]
    date = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    answer = await _call(
        client, "PUT", f"/v1/admin/schedules/{schedule_id}", json=schedule_body(date),
        headers=_headers("ops", "inventory:admin"),
    )  # fmt: skip
    assert answer.status == 201, answer.body
    return schedule_id


async def _hold(client: Client, schedule_id: str, user: str, **choice: Any) -> Answer:
    body = {"schedule_id": schedule_id, "from": STATIONS[0], "to": STATIONS[-1], **choice}
    return await _call(client, "POST", "/v1/holds", json=body, headers=_headers(user))


async def _confirm(client: Client, hold_id: str) -> Answer:
    body = {
        "passengers": [{"name": "Dewi", "id_number": "3174000000000001", "type": "adult",
                        "seat": SEAT}],
        "payment": {"method": "qris", "reference": "PG-1", "amount": "450000"},
    }  # fmt: skip
    return await _call(
        client, "POST", f"/v1/holds/{hold_id}/confirm", json=body, headers=_headers("owner")
    )


async def _read(client: Client, schedule_id: str) -> Answer:
    return await _call(client, "GET", f"/v1/schedules/{schedule_id}/availability")


def _refused_quickly(answer: Answer) -> None:
    assert answer.status == 503, answer.body
    assert answer.body["code"] == "dependency_unavailable", answer.body
    assert answer.retry_after is not None
    assert int(answer.retry_after) >= 1
    assert answer.took_s < ANSWERED_WITHIN_S, answer.took_s


async def _bookings_for(dsn: str, hold_id: str) -> list[str]:
    conn = await asyncpg.connect(dsn)  # straight to Postgres, not through the proxy
    try:
        rows = await conn.fetch("SELECT booking_number FROM bookings WHERE hold_id = $1", hold_id)
    finally:
        await conn.close()
    return [r["booking_number"] for r in rows]


async def test_blackholed_postgres_answers_confirms_503_in_seconds_opens_the_breaker_and_recovers(
    client: Client, pg_proxy: FaultProxy, migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sales: Sales = client.app[CTX].sales
    clock = Clock()
    breaker = sales.pg_breaker = CircuitBreaker("postgres", clock=clock)
    acquired = 0
    real_acquire = asyncpg.Pool.acquire

    def counting_acquire(pool: asyncpg.Pool, *args: Any, **kw: Any) -> Any:
        nonlocal acquired
        acquired += pool is sales.pool
        return real_acquire(pool, *args, **kw)

    monkeypatch.setattr(asyncpg.Pool, "acquire", counting_acquire)  # the Pool has __slots__
    schedule_id = await _schedule(client)
    held = await _hold(client, schedule_id, "owner", seats=[SEAT], ttl_s=120)
    assert held.status == 201, held.body
    hold_id = held.body["hold_id"]
    before = await sales.inventory.get_hold(hold_id)
    assert before is not None

    pg_proxy.set_mode("blackhole")
    # a confirm waits out the deadlines (not asyncpg's 10 s) while holds and reads answer
    confirm, hold, read = await asyncio.gather(
        _confirm(client, hold_id),
        _hold(client, schedule_id, "other-1", **{"class": "economy", "count": 1}),
        _read(client, schedule_id),
    )
    _refused_quickly(confirm)
    assert (hold.status, read.status) == (201, 200), (hold.body, read.body)
    for _ in range(2):  # three consecutive outages open the circuit
        _refused_quickly(await _confirm(client, hold_id))
    assert breaker.state == "open"
    assert breaker.opened_total == 1

    # open: answered at once without asking Postgres; the hold is left as it was
    asked = acquired
    _refused_quickly(await _confirm(client, hold_id))
    _refused_quickly(await _call(client, "GET", f"/v1/schedules/{schedule_id}"))  # catalogue
    assert acquired == asked
    assert await sales.inventory.get_hold(hold_id) == before
    hold = await _hold(client, schedule_id, "other-2", **{"class": "economy", "count": 1})
    assert hold.status == 201, hold.body
    assert (await _read(client, schedule_id)).status == 200

    # after the cooldown one probe goes to Postgres; still dead, so the circuit opens again
    clock.now += BREAKER_COOLDOWN_S
    _refused_quickly(await _confirm(client, hold_id))
    assert acquired == asked + 1
    assert breaker.state == "open"
    assert breaker.opened_total == 1  # re-opened, not a new outage
    assert await sales.inventory.get_hold(hold_id) == before

    # Postgres answers again: the next probe closes the circuit and the hold confirms
    pg_proxy.set_mode("pass")
    clock.now += BREAKER_COOLDOWN_S
    confirmed = await _confirm(client, hold_id)
    assert confirmed.status == 201, confirmed.body
    assert breaker.state == "closed"
    assert await _bookings_for(migrated_dsn, hold_id) == [confirmed.body["booking_number"]]
    after = await sales.inventory.get_hold(hold_id)
    assert after is not None
    assert after.status == "confirmed"


async def test_a_commit_whose_answer_never_came_is_503_and_the_retry_returns_that_booking(
    client: Client, pg_proxy: FaultProxy, migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sales: Sales = client.app[CTX].sales
    schedule_id = await _schedule(client)
    held = await _hold(client, schedule_id, "owner", seats=[SEAT], ttl_s=120)
    assert held.status == 201, held.body
    hold_id = held.body["hold_id"]
    before = await sales.inventory.get_hold(hold_id)
    real_audit = pg_bookings._audit

    async def audit_then_blackhole(*args: Any, **kw: Any) -> None:
        await real_audit(*args, **kw)  # the transaction's last statement; COMMIT comes next
        pg_proxy.set_mode("blackhole")

    monkeypatch.setattr(pg_bookings, "_audit", audit_then_blackhole)
    # the COMMIT is sent and its answer never comes: the outcome is unknown to the service
    _refused_quickly(await _confirm(client, hold_id))
    monkeypatch.setattr(pg_bookings, "_audit", real_audit)
    assert await sales.inventory.get_hold(hold_id) == before  # confirm_abort: held again

    pg_proxy.set_mode("pass")  # the link heals and delivers the COMMIT it held: it commits
    deadline = time.monotonic() + 10
    while not (committed := await _bookings_for(migrated_dsn, hold_id)):
        assert time.monotonic() < deadline, "the held COMMIT never reached Postgres"
        await asyncio.sleep(0.1)

    retry = await _confirm(client, hold_id)  # the client's retry after the 503
    assert retry.status == 200, retry.body  # the booking that committed, not a second one
    assert retry.body["booking_number"] == committed[0]
    assert await _bookings_for(migrated_dsn, hold_id) == committed
    after = await sales.inventory.get_hold(hold_id)
    assert after is not None
    assert (after.status, after.booking_number) == ("confirmed", committed[0])
