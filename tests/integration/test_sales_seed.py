"""The demo network: real stations and trains, 7 dates, loaded through Sales, idempotent."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import asyncpg

from kai_inventory.demo_data import STATIONS, TRAINS, demo_schedules, seed
from kai_inventory.domain import validate_schedule
from kai_inventory.sales import open_sales


def test_every_demo_schedule_is_a_valid_definition_with_52_and_80_seat_coaches():
    schedules = demo_schedules(dt.date(2030, 1, 1))
    assert len(schedules) == 7 * len(TRAINS)
    assert schedules[0][0] == "argo-bromo-anggrek-1-20300101"
    for sid, definition in schedules:
        assert validate_schedule(definition) == [], sid
        for coach in definition.coaches:
            assert len(coach.seats) == {"executive": 52, "economy": 80}[coach.cls]
    codes = {s.code for s in STATIONS}
    assert {"GMR", "JNG", "BKS", "CKP", "CN", "TG", "PK", "SMT", "PWT", "KYA", "KTA", "YK",
            "SLO", "MN", "SGU", "SBI", "BD", "ML"} <= codes  # fmt: skip
    assert all(stop.station in codes for _, d in schedules for stop in d.stops)


async def test_seed_demo_loads_postgres_and_redis_and_a_second_run_changes_nothing(
    settings, private_db
):
    dsn = await private_db()
    local = settings.replace(database_url=dsn)
    async with open_sales(local) as sales:
        first = await seed(sales, local, days=2)
        assert first == {"created": 2 * len(TRAINS)}
        conn = await asyncpg.connect(dsn)
        try:
            stamp = await conn.fetchval(
                "SELECT max(greatest(s.updated_at, t.updated_at)) FROM schedules s"
                " JOIN trains t ON t.id = s.train_id"
            )
            assert await conn.fetchval("SELECT count(*) FROM stations") == len(STATIONS)
            assert await conn.fetchval("SELECT count(*) FROM trains") == len(TRAINS)
            second = await seed(sales, local, days=2)
            assert second == {"unchanged": 2 * len(TRAINS)}
            assert (
                await conn.fetchval(
                    "SELECT max(greatest(s.updated_at, t.updated_at)) FROM schedules s"
                    " JOIN trains t ON t.id = s.train_id"
                )
                == stamp
            )
        finally:
            await conn.close()
        today = dt.datetime.now(zoneinfo.ZoneInfo(local.timezone)).date()
        assert len(await sales.inventory.open_schedule_ids()) == 2 * len(TRAINS)
        tomorrow = today + dt.timedelta(days=1)
        found = await sales.search("GMR", "YK", tomorrow)
        assert {r.schedule_id for r in found} >= {
            f"taksaka-7-{tomorrow:%Y%m%d}",
            f"argo-lawu-5-{tomorrow:%Y%m%d}",
        }
        taksaka = next(r for r in found if r.schedule_id.startswith("taksaka"))
        assert [(c.cls, c.total, c.available) for c in taksaka.classes] == [
            ("executive", 7 * 52, 7 * 52)
        ]
        overnight = await sales.search("YK", "SGU", tomorrow + dt.timedelta(days=1))
        assert f"bima-43-{tomorrow:%Y%m%d}" in {r.schedule_id for r in overnight}
