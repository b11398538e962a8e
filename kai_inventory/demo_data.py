"""The demo network: real KAI stations and trains on Java's main lines, 7 days from today.

Times and coach compositions are plausible, not a copy of the current timetable (GAPEKA).
Executive coaches are 2-2 (rows 1..13, seats A-D: 52 seats); economy coaches are 3-2
(rows 1..16, seats A-E: 80 seats). Every schedule goes through ``Sales.put_schedule``, so the
Postgres rows and the Redis inventory are both written, and running the seed twice changes
nothing (the second run answers UNCHANGED for each schedule).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import re
import sys
import zoneinfo
from typing import TYPE_CHECKING

from kai_inventory.domain import Coach, ScheduleDef, Stop, Train
from kai_inventory.persist.catalogue import StationInfo, upsert_stations
from kai_inventory.settings import Settings

if TYPE_CHECKING:
    from kai_inventory.sales import Sales

STATIONS: tuple[StationInfo, ...] = (
    StationInfo("GMR", "Gambir", "Jakarta Pusat", "DKI Jakarta", -6.176680, 106.830620),
    StationInfo("JNG", "Jatinegara", "Jakarta Timur", "DKI Jakarta", -6.215100, 106.870800),
    StationInfo("BKS", "Bekasi", "Bekasi", "Jawa Barat", -6.236100, 106.999700),
    StationInfo("CKP", "Cikampek", "Karawang", "Jawa Barat", -6.406200, 107.459500),
    StationInfo("CN", "Cirebon", "Cirebon", "Jawa Barat", -6.705600, 108.555300),
    StationInfo("TG", "Tegal", "Tegal", "Jawa Tengah", -6.867600, 109.137100),
    StationInfo("PK", "Pekalongan", "Pekalongan", "Jawa Tengah", -6.890000, 109.667400),
    StationInfo("SMT", "Semarang Tawang", "Semarang", "Jawa Tengah", -6.964400, 110.427800),
    StationInfo("PWT", "Purwokerto", "Banyumas", "Jawa Tengah", -7.419700, 109.221800),
    StationInfo("KYA", "Kroya", "Cilacap", "Jawa Tengah", -7.633900, 109.245900),
    StationInfo("KTA", "Kutoarjo", "Purworejo", "Jawa Tengah", -7.725300, 109.912700),
    StationInfo("YK", "Yogyakarta", "Yogyakarta", "DI Yogyakarta", -7.789200, 110.363300),
    StationInfo("SLO", "Solo Balapan", "Surakarta", "Jawa Tengah", -7.556700, 110.821300),
    StationInfo("MN", "Madiun", "Madiun", "Jawa Timur", -7.616600, 111.523900),
    StationInfo("SGU", "Surabaya Gubeng", "Surabaya", "Jawa Timur", -7.265300, 112.752100),
    StationInfo("SBI", "Surabaya Pasarturi", "Surabaya", "Jawa Timur", -7.246000, 112.731500),
    StationInfo("BD", "Bandung", "Bandung", "Jawa Barat", -6.914100, 107.602700),
    StationInfo("ML", "Malang", "Malang", "Jawa Timur", -7.977400, 112.636800),
)
_NAMES = {s.code: s.name for s in STATIONS}


@dataclasses.dataclass(frozen=True, slots=True)
class DemoTrain:
    number: str
    name: str
    # (station, arrival, departure, day): times local (Asia/Jakarta)
    calls: tuple[tuple[str, str | None, str | None, int], ...]
    executive: int  # coaches
    economy: int
    executive_price: str
    economy_price: str = "0"


TRAINS: tuple[DemoTrain, ...] = (
    DemoTrain("1", "Argo Bromo Anggrek", (
        ("GMR", None, "08:20", 0), ("CN", "10:58", "11:03", 0), ("PK", "12:40", "12:43", 0),
        ("SMT", "13:55", "14:05", 0), ("SBI", "17:32", None, 0),
    ), executive=8, economy=0, executive_price="680000"),
    DemoTrain("5", "Argo Lawu", (
        ("GMR", None, "08:45", 0), ("CN", "11:36", "11:41", 0), ("PWT", "13:33", "13:38", 0),
        ("KTA", "14:55", "14:58", 0), ("YK", "15:46", "15:54", 0), ("SLO", "16:48", None, 0),
    ), executive=8, economy=0, executive_price="620000"),
    DemoTrain("7", "Taksaka", (
        ("GMR", None, "09:10", 0), ("JNG", "09:24", "09:28", 0), ("CN", "12:05", "12:10", 0),
        ("PWT", "14:02", "14:07", 0), ("KYA", "14:38", "14:41", 0), ("KTA", "15:33", "15:36", 0),
        ("YK", "16:24", None, 0),
    ), executive=7, economy=0, executive_price="560000"),
    DemoTrain("9", "Argo Dwipangga", (
        ("GMR", None, "20:45", 0), ("CN", "23:33", "23:38", 0), ("PWT", "01:32", "01:37", 1),
        ("YK", "03:58", "04:06", 1), ("SLO", "05:00", None, 1),
    ), executive=8, economy=0, executive_price="600000"),
    DemoTrain("19", "Argo Sindoro", (
        ("GMR", None, "06:00", 0), ("BKS", "06:24", "06:27", 0), ("CKP", "07:12", "07:15", 0),
        ("CN", "08:42", "08:47", 0), ("TG", "09:48", "09:51", 0), ("PK", "10:34", "10:37", 0),
        ("SMT", "11:38", None, 0),
    ), executive=7, economy=0, executive_price="450000"),
    DemoTrain("41", "Gajayana", (
        ("GMR", None, "18:40", 0), ("JNG", "18:54", "18:58", 0), ("CN", "21:45", "21:50", 0),
        ("PWT", "23:50", "23:55", 0), ("KTA", "01:14", "01:17", 1), ("YK", "02:05", "02:13", 1),
        ("SLO", "03:06", "03:11", 1), ("MN", "04:35", "04:40", 1), ("ML", "08:25", None, 1),
    ), executive=8, economy=0, executive_price="790000"),
    DemoTrain("43", "Bima", (
        ("GMR", None, "17:10", 0), ("JNG", "17:24", "17:28", 0), ("BKS", "17:45", "17:48", 0),
        ("CN", "20:15", "20:20", 0), ("PWT", "22:20", "22:25", 0), ("KYA", "22:55", "22:58", 0),
        ("KTA", "23:50", "23:53", 0), ("YK", "00:40", "00:48", 1), ("SLO", "01:43", "01:48", 1),
        ("MN", "03:05", "03:10", 1), ("SGU", "05:12", None, 1),
    ), executive=8, economy=0, executive_price="760000"),
    DemoTrain("6", "Argo Wilis", (
        ("BD", None, "07:30", 0), ("KYA", "11:35", "11:40", 0), ("KTA", "12:32", "12:35", 0),
        ("YK", "13:22", "13:30", 0), ("SLO", "14:24", "14:29", 0), ("MN", "15:48", "15:53", 0),
        ("SGU", "18:02", None, 0),
    ), executive=7, economy=0, executive_price="650000"),
    DemoTrain("111", "Progo", (
        ("JNG", None, "22:20", 0), ("BKS", "22:40", "22:44", 0), ("CKP", "23:30", "23:35", 0),
        ("CN", "01:18", "01:25", 1), ("PWT", "03:35", "03:42", 1), ("KYA", "04:20", "04:25", 1),
        ("KTA", "05:30", "05:35", 1), ("YK", "06:25", None, 1),
    ), executive=0, economy=8, executive_price="0", economy_price="245000"),
    DemoTrain("109", "Matarmaja", (
        ("JNG", None, "14:00", 0), ("BKS", "14:20", "14:24", 0), ("CN", "17:10", "17:18", 0),
        ("TG", "18:25", "18:30", 0), ("SMT", "20:40", "20:50", 0), ("MN", "01:15", "01:20", 1),
        ("ML", "05:25", None, 1),
    ), executive=0, economy=8, executive_price="0", economy_price="265000"),
)  # fmt: skip


def executive_seats() -> list[str]:
    return [f"{row}{letter}" for row in range(1, 14) for letter in "ABCD"]


def economy_seats() -> list[str]:
    return [f"{row}{letter}" for row in range(1, 17) for letter in "ABCDE"]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def schedule_id(train: DemoTrain, date: dt.date) -> str:
    return f"{_slug(train.name)}-{train.number}-{date:%Y%m%d}"


def demo_definition(train: DemoTrain, date: dt.date) -> ScheduleDef:
    coaches: list[Coach] = []
    car = 1
    for _ in range(train.executive):
        coaches.append(Coach(car=car, cls="executive", seats=executive_seats(),
                             base_price=train.executive_price))  # fmt: skip
        car += 1
    for _ in range(train.economy):
        coaches.append(Coach(car=car, cls="economy", seats=economy_seats(),
                             base_price=train.economy_price))  # fmt: skip
        car += 1
    return ScheduleDef(
        train=Train(number=train.number, name=train.name, type="express"),
        departure_date=date,
        stops=[
            Stop(station=code, name=_NAMES[code], arrival=arr, departure=dep, day=day)
            for code, arr, dep, day in train.calls
        ],
        coaches=coaches,
    )


def demo_schedules(first_day: dt.date, days: int = 7) -> list[tuple[str, ScheduleDef]]:
    out: list[tuple[str, ScheduleDef]] = []
    for offset in range(days):
        date = first_day + dt.timedelta(days=offset)
        out.extend((schedule_id(t, date), demo_definition(t, date)) for t in TRAINS)
    return out


async def seed(sales: Sales, settings: Settings, days: int = 7) -> dict[str, int]:
    """Load the network through ``sales``; returns a count per outcome ("created",
    "replaced", "unchanged", "in_use")."""
    async with sales.pool.acquire() as conn:
        await upsert_stations(conn, STATIONS)
    today = dt.datetime.now(zoneinfo.ZoneInfo(settings.timezone)).date()
    counts: dict[str, int] = {}
    for sid, definition in demo_schedules(today, days):
        outcome = await sales.put_schedule(sid, definition)
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
    return counts


async def _seed_command(settings: Settings) -> int:
    from kai_inventory.sales import open_sales

    async with open_sales(settings) as sales:
        counts = await seed(sales, settings)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    print(f"demo network: {len(STATIONS)} stations, {len(TRAINS)} trains; schedules: {summary}")
    return 1 if counts.get("in_use") else 0


def seed_demo_command(settings: Settings, args: argparse.Namespace) -> int:
    """``kai-inventory seed-demo``."""
    from kai_inventory.sales import DependencyUnavailable

    try:
        return asyncio.run(_seed_command(settings))
    except DependencyUnavailable as exc:
        print(f"kai-inventory seed-demo: {exc}", file=sys.stderr)
        return 1
