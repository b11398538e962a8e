"""Shared builders for the sales integration tests (imported by test_sales_*.py)."""

from __future__ import annotations

import datetime as dt
import secrets

from kai_inventory.domain import Coach, ConfirmRequest, Passenger, Payment, ScheduleDef, Stop, Train
from kai_inventory.engine.codes import Code
from kai_inventory.engine.inventory import Hold, HoldRequest
from kai_inventory.sales import Sales

STOPS = ["GMR", "CN", "PWT", "YK"]


def new_id() -> str:
    return "t-" + secrets.token_hex(5)


def definition(
    date: dt.date | None = None,
    seats: tuple[str, ...] = ("1A", "1B", "1C", "1D"),
    economy: tuple[str, ...] = ("1A", "1B", "1C", "1D", "1E"),
    departure: str = "08:50",
) -> ScheduleDef:
    return ScheduleDef(
        train=Train(number="7", name="Taksaka"),
        departure_date=date or dt.date.today() + dt.timedelta(days=30),
        stops=[
            Stop(station="GMR", name="Gambir", departure=departure),
            Stop(station="CN", name="Cirebon", arrival="11:40", departure="11:45"),
            Stop(station="PWT", name="Purwokerto", arrival="13:30", departure="13:35"),
            Stop(station="YK", name="Yogyakarta", arrival="15:10"),
        ],
        coaches=[
            Coach(car=1, cls="executive", seats=list(seats), base_price="450000"),
            Coach(car=5, cls="economy", seats=list(economy), base_price="150000"),
        ],
    )


async def hold(
    sales: Sales, schedule_id: str, seats: list[str], a: int = 0, b: int = 3, user: str = "u1",
    ttl_ms: int = 600_000,
) -> Hold:  # fmt: skip
    layout = await sales.inventory.layout(schedule_id)
    assert layout is not None
    indices = [layout.seat_index(s) for s in seats]
    outcome = await sales.inventory.hold(
        HoldRequest(schedule_id=schedule_id, user=user, a=a, b=b, ttl_ms=ttl_ms,
                    seats=[i for i in indices if i is not None])
    )  # fmt: skip
    assert outcome.code == Code.OK, outcome
    assert outcome.hold is not None
    return outcome.hold


async def try_hold(sales: Sales, schedule_id: str, seats: list[str], a: int, b: int) -> Code:
    layout = await sales.inventory.layout(schedule_id)
    assert layout is not None
    outcome = await sales.inventory.hold(
        HoldRequest(schedule_id=schedule_id, user="prober-" + secrets.token_hex(3), a=a, b=b,
                    ttl_ms=60_000, seats=[layout.seat_index(s) or 0 for s in seats])
    )  # fmt: skip
    if outcome.code == Code.OK and outcome.hold is not None:
        await sales.inventory.release(outcome.hold.hold_id, None)
    return outcome.code


def request(seats: list[str], amount: str = "450000") -> ConfirmRequest:
    return ConfirmRequest(
        passengers=[
            Passenger(name=f"Passenger {i}", id_number=f"3174{i:012d}", seat=seat)
            for i, seat in enumerate(seats)
        ],
        payment=Payment(method="qris", reference="PG-" + secrets.token_hex(3), amount=amount),
    )
