"""Helpers shared by the Locust scenarios, the smoke/loadtest runner and the benchmark.

Everything here speaks to the service as a black box over HTTP (the contract in
/work/shared/contract/API.md) and needs only the standard library plus PyJWT, so the same
code builds schedules for Locust, for ``bench.py`` and for the tests of these helpers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from kai_inventory.settings import DEV_JWT_SECRET

CLASS_ORDER = ("executive", "business", "economy", "sleeper")
# Real KAI station codes on the Java north line and beyond: enough for 64 stops.
STATIONS = (
    "GMR",
    "JNG",
    "BKS",
    "KRW",
    "CKP",
    "HGL",
    "JTB",
    "TGR",
    "CN",
    "BBK",
    "KGG",
    "LOS",
    "PPK",
    "TG",
    "SLW",
    "BMA",
    "PML",
    "PKL",
    "KTS",
    "WLR",
    "BTG",
    "KLN",
    "PLB",
    "KDL",
    "WLI",
    "SMT",
    "SMC",
    "NGR",
    "TGN",
    "GBN",
    "RDL",
    "PWD",
    "CPU",
    "BJ",
    "KTK",
    "SBI",
    "SGU",
    "WO",
    "SLO",
    "KT",
    "YK",
    "LPN",
    "WT",
    "KWN",
    "KTA",
    "PWT",
    "KYA",
    "SDR",
    "KRA",
    "MA",
    "KNN",
    "ML",
    "SB",
    "KRT",
    "MN",
    "NJ",
    "JG",
    "BAT",
    "KDR",
    "TA",
    "BL",
    "PSR",
    "BG",
    "PRB",
    "KLT",
)
SEAT_LETTERS = "ABCD"


def jwt_secret() -> str:
    return os.environ.get("KAI_JWT_SECRET", DEV_JWT_SECRET)


def mint_token(
    sub: str,
    scopes: str = "inventory:read inventory:hold",
    ttl_s: int = 3600,
    secret: str | None = None,
) -> str:
    """A bearer token exactly like the server's own ``kai-inventory token`` (HS256)."""
    claims = {"sub": sub, "scope": scopes, "exp": int(time.time()) + ttl_s}
    return jwt.encode(claims, secret or jwt_secret(), algorithm="HS256")


def run_id() -> str:
    """A short id that makes every schedule id and user name of one run unique."""
    return "lt" + secrets.token_hex(4)


def sale_date(days_ahead: int = 45) -> dt.date:
    """A departure date far enough ahead that no journey's sale closes during a run."""
    return dt.date.today() + dt.timedelta(days=days_ahead)


@dataclass(frozen=True)
class CoachSpec:
    car: int
    cls: str
    seats: int
    price: int


@dataclass
class ScheduleInfo:
    """What a load-test user needs to know about one schedule it created."""

    schedule_id: str
    stops: list[str]
    date: str
    coaches: list[CoachSpec]
    seats_by_class: dict[str, list[str]] = field(default_factory=dict)
    price_by_seat: dict[str, int] = field(default_factory=dict)

    @property
    def n_legs(self) -> int:
        return len(self.stops) - 1

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule_id": self.schedule_id,
            "stops": self.stops,
            "date": self.date,
            "coaches": [c.__dict__ for c in self.coaches],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleInfo:
        return make_schedule_info(
            data["schedule_id"],
            data["stops"],
            data["date"],
            [CoachSpec(**c) for c in data["coaches"]],
        )


def seat_labels(n: int) -> list[str]:
    """``1A 1B 1C 1D 2A ...``: rows of four."""
    return [f"{row + 1}{SEAT_LETTERS[col]}" for row in range((n + 3) // 4) for col in range(4)][:n]


def make_schedule_info(
    schedule_id: str, stops: Sequence[str], date: str, coaches: list[CoachSpec]
) -> ScheduleInfo:
    info = ScheduleInfo(schedule_id, list(stops), date, list(coaches))
    for coach in coaches:
        ids = [f"{coach.car}-{label}" for label in seat_labels(coach.seats)]
        info.seats_by_class.setdefault(coach.cls, []).extend(ids)
        for seat in ids:
            info.price_by_seat[seat] = coach.price
    return info


def schedule_definition(info: ScheduleInfo, train_number: str, train_name: str) -> dict[str, Any]:
    """The ``PUT /v1/admin/schedules/{id}`` body: one stop every 40 minutes from 06:00."""
    stops = []
    minute = 6 * 60
    last = len(info.stops) - 1
    for i, code in enumerate(info.stops):
        stop: dict[str, Any] = {"station": code, "name": f"Station {code}"}
        day, clock = divmod(minute, 24 * 60)
        hhmm = f"{clock // 60:02d}:{clock % 60:02d}"
        if i > 0:
            stop["arrival"] = hhmm
        if i < last:
            dep = minute + 2 if i > 0 else minute
            dday, dclock = divmod(dep, 24 * 60)
            stop["departure"] = f"{dclock // 60:02d}:{dclock % 60:02d}"
            day = dday
        if day:
            stop["day"] = day
        stops.append(stop)
        minute += 40
    return {
        "train": {"number": train_number, "name": train_name, "type": "express"},
        "departure_date": info.date,
        "stops": stops,
        "coaches": [
            {
                "car": c.car,
                "class": c.cls,
                "base_price": str(c.price),
                "seats": seat_labels(c.seats),
            }
            for c in info.coaches
        ],
    }


def standard_coaches(executive: int, economy: int, seats_per_car: int = 80) -> list[CoachSpec]:
    coaches = [CoachSpec(i + 1, "executive", 50, 450_000) for i in range(executive)]
    coaches += [
        CoachSpec(executive + i + 1, "economy", seats_per_car, 150_000) for i in range(economy)
    ]
    return coaches


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


def http_json(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One request with the standard library; returns (status, decoded JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        decoded = raw.decode(errors="replace")
    return status, decoded


def put_schedule(base_url: str, info: ScheduleInfo, number: str, name: str, admin: str) -> None:
    status, body = http_json(
        "PUT",
        f"{base_url}/v1/admin/schedules/{info.schedule_id}",
        schedule_definition(info, number, name),
        token=admin,
    )
    if status not in (200, 201):
        raise ApiError(status, json.dumps(body))


def wait_ready(base_url: str, timeout_s: float = 30.0, path: str = "/readyz") -> None:
    """Poll until the server answers 200 on ``path``; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, body = http_json("GET", base_url + path, timeout=2.0)
            if status == 200:
                return
            last = (status, body)
        time.sleep(0.2)
    raise TimeoutError(f"{base_url}{path} not ready after {timeout_s:.0f}s (last answer: {last})")


def build_run_schedules(prefix: str, n_browse: int = 6, stops_peak: int = 10) -> list[ScheduleInfo]:
    """The load test's own catalogue: one popular train (index 0) and ``n_browse`` others.

    All run on the same route and date, so a search returns every one of them.
    """
    date = sale_date().isoformat()
    peak = make_schedule_info(f"{prefix}-peak", STATIONS[:stops_peak], date, standard_coaches(2, 6))
    others = [
        make_schedule_info(
            f"{prefix}-b{i}", STATIONS[:stops_peak], date, standard_coaches(1, 4, seats_per_car=64)
        )
        for i in range(n_browse)
    ]
    return [peak, *others]


def create_run_schedules(base_url: str, schedules: list[ScheduleInfo], prefix: str) -> None:
    admin = mint_token(f"{prefix}-admin", "inventory:read inventory:hold inventory:admin")
    for i, info in enumerate(schedules):
        put_schedule(base_url, info, f"{prefix[-6:]}{i}", f"Load {i}", admin)
