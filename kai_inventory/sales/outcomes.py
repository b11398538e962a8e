"""What the sales use cases answer: the Structs the API encodes and the outcomes it maps."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

import msgspec

from kai_inventory.domain import (
    Booking,
    Coach,
    Refund,
    Stop,
    Train,
)
from kai_inventory.engine.codes import Code
from kai_inventory.engine.views import ClassAvailability


class StopTime(msgspec.Struct, frozen=True, omit_defaults=True):
    station: str
    departure: str | None = None
    arrival: str | None = None


class SearchResult(msgspec.Struct, frozen=True, rename={"from_": "from"}):
    schedule_id: str
    train: Train
    status: str
    from_: StopTime
    to: StopTime
    classes: list[ClassAvailability]


class ScheduleView(msgspec.Struct, frozen=True):
    schedule_id: str
    status: str
    delay_minutes: int
    reason: str | None
    train: Train
    departure_date: dt.date
    stops: list[Stop]
    coaches: list[Coach]


class PutOutcome(enum.Enum):
    CREATED = "created"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"
    IN_USE = "in_use"


class ConfirmOutcome(msgspec.Struct, frozen=True):
    code: Code
    booking: Booking | None = None
    created: bool = False
    detail: str = ""


class CancelOutcome(msgspec.Struct, frozen=True):
    code: Code  # OK, or HOLD_NOT_FOUND meaning booking_not_found
    booking: Booking | None = None
    refund: Refund | None = None


class DependencyUnavailable(Exception):
    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency


@dataclasses.dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement between Redis and Postgres about a seat's sold legs."""

    schedule_id: str
    seat: str
    a: int
    b: int
    kind: str  # "missing_in_redis" (sold in Postgres only) | "extra_in_redis" | "schedule_missing"
    booking_number: str | None = None

    def describe(self) -> str:
        if self.kind == "schedule_missing":
            return f"{self.schedule_id}: not open in Redis"
        where = f"{self.schedule_id}: seat {self.seat} legs [{self.a}, {self.b})"
        if self.kind == "missing_in_redis":
            return f"{where} sold in Postgres (booking {self.booking_number}), not sold in Redis"
        return f"{where} sold in Redis, not sold in Postgres"
