"""F8: confirms racing the hold deadline to the millisecond, under a workload."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import aiohttp
import asyncpg

from tests.faults.conftest import LONG, SECRET, Stack, record_summary
from tests.faults.invariants import check_all
from tests.faults.workload import Record, Workload

RACERS = 80 if LONG else 40  # one per seat-leg of legs 0..RACERS/20-1


async def test_f8_confirms_racing_the_deadline_to_the_millisecond(stack_factory: Any) -> None:
    stack: Stack = await stack_factory()
    assert stack.service is not None
    base = stack.service.url
    target, others = stack.specs[0], stack.specs[1:]
    background = Workload(base, others, SECRET, tasks=12, seed=8)
    client = Workload(base, [target], SECRET)  # used for its recording _call only
    timeout = aiohttp.ClientTimeout(total=5)

    async def racer(i: int, session: aiohttp.ClientSession) -> tuple[Record, Record, float]:
        user = f"racer-{i}"
        seat, leg = target.seats[i % len(target.seats)], i // len(target.seats)
        body = {"schedule_id": target.schedule_id, "from": target.stations[leg],
                "to": target.stations[leg + 1], "seats": [seat], "ttl_s": 1}  # fmt: skip
        hold = await client._call(
            session, "POST", "/v1/holds", Record("hold", user, target.schedule_id, 0, 0, None),
            json=body,
        )  # fmt: skip
        assert hold.status == 201, hold.body
        expires = dt.datetime.fromisoformat(hold.body["expires_at"]).timestamp()
        offset = (-40 + 80 * i / RACERS) / 1000  # -40 ms .. +40 ms around the deadline
        await asyncio.sleep(max(0.0, expires + offset - time.time()))
        confirm = await client._call(
            session, "POST", f"/v1/holds/{hold.body['hold_id']}/confirm",
            Record("confirm", user, target.schedule_id, 0, 0, None, hold_id=hold.body["hold_id"]),
            json={"passengers": [{"name": "R", "id_number": "31740000", "type": "adult",
                                  "seat": seat}],
                  "payment": {"method": "qris", "reference": "PG-race", "amount": "100"}},
        )  # fmt: skip
        if confirm.status in (200, 201):
            confirm.booking = confirm.body["booking_number"]
        return hold, confirm, expires

    load = asyncio.create_task(background.run(30.0 if LONG else 6.0))
    await asyncio.sleep(1.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        races = await asyncio.gather(*(racer(i, session) for i in range(RACERS)))
    # every expired hold's seat is free within its TTL + 1 s
    await asyncio.sleep(max(0.0, max(e for _, _, e in races) + 1.0 - time.time()))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        states: dict[tuple[int, str], str] = {}
        for leg in range(RACERS // len(target.seats)):
            async with session.get(
                f"{base}/v1/schedules/{target.schedule_id}/seatmap",
                params={"from": target.stations[leg], "to": target.stations[leg + 1]},
            ) as response:
                seatmap = await response.json()
            for coach in seatmap["coaches"]:
                for s in coach["seats"]:
                    states[(leg, s["seat"])] = s["state"]
    await load

    conn = await asyncpg.connect(stack.database_url)
    try:
        booked = {r["hold_id"] for r in await conn.fetch("SELECT hold_id FROM bookings")}
    finally:
        await conn.close()
    won = lost = 0
    for i, (_hold, confirm, expires) in enumerate(races):
        seat, leg = target.seats[i % len(target.seats)], i // len(target.seats)
        assert confirm.status in (201, 410), (confirm.status, confirm.body)
        if confirm.t0 >= expires:
            assert confirm.status == 410, f"confirm sent {confirm.t0 - expires:.3f}s late won"
        if confirm.t1 < expires:
            assert confirm.status == 201, f"confirm answered before the deadline lost: {i}"
        if confirm.status == 201:
            won += 1
            assert confirm.hold_id in booked
            assert states[(leg, seat)] == "sold"
        else:
            lost += 1
            assert confirm.hold_id not in booked, "a 410 confirm left a booking"
            assert states[(leg, seat)] == "free", "an expired hold's seat not free at TTL + 1 s"
    assert won, (won, lost)  # the race really straddled the deadline
    assert lost, (won, lost)
    history = background.history + client.history
    result = await check_all(
        stack.direct_settings(), base, stack.specs, history, background.expiring
    )
    result["agree_s"] = result.pop("recover_s")
    result["recover_s"] = 0.0
    record_summary(
        "F8 confirms racing the deadline (±40 ms)", [background, client], result,
        won=won, expired=lost,
    )  # fmt: skip
