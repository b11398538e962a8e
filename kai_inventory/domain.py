"""The catalogue's shared vocabulary: a schedule definition as the contract states it.

These Structs are the body of ``PUT /v1/admin/schedules/{id}`` and what ``persist`` stores and
``sales`` turns into an engine layout. They carry no I/O, so every layer may import them.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated, Literal

import msgspec

SCHEDULE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
STATION_PATTERN = r"^[A-Z]{2,5}$"
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
SEAT_LABEL_PATTERN = r"^[A-Za-z0-9]{1,8}$"
PRICE_PATTERN = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$"

SeatClass = Literal["economy", "business", "executive", "sleeper"]
CLASS_ORDER: tuple[str, ...] = ("executive", "business", "economy", "sleeper")
ScheduleStatus = Literal["scheduled", "delayed", "cancelled"]

StationCode = Annotated[str, msgspec.Meta(pattern=STATION_PATTERN)]
ClockTime = Annotated[str, msgspec.Meta(pattern=TIME_PATTERN)]

MAX_STOPS = 64
MAX_COACHES = 64
MAX_SEATS = 5_000


class Train(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    number: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    type: Literal["express", "local", "high_speed"] = "express"


class Stop(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    station: StationCode
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    arrival: ClockTime | None = None
    departure: ClockTime | None = None
    day: Annotated[int, msgspec.Meta(ge=0, le=7)] = 0


class Coach(msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename={"cls": "class"}):
    car: Annotated[int, msgspec.Meta(ge=1, le=999)]
    cls: SeatClass
    seats: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=SEAT_LABEL_PATTERN)]],
        msgspec.Meta(min_length=1, max_length=MAX_SEATS),
    ]
    base_price: Annotated[str, msgspec.Meta(pattern=PRICE_PATTERN)] = "0"


class ScheduleDef(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    train: Train
    departure_date: dt.date
    stops: Annotated[list[Stop], msgspec.Meta(min_length=2, max_length=MAX_STOPS)]
    coaches: Annotated[list[Coach], msgspec.Meta(min_length=1, max_length=MAX_COACHES)]


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


def seat_id(car: int, label: str) -> str:
    return f"{car}-{label}"


def validate_schedule(definition: ScheduleDef) -> list[FieldError]:
    """Rules that types alone cannot state; an empty list means the definition is sound."""
    errors: list[FieldError] = []
    seen_stations: set[str] = set()
    last = len(definition.stops) - 1
    previous_minute = -1
    for i, stop in enumerate(definition.stops):
        where = f"stops[{i}]"
        if stop.station in seen_stations:
            errors.append(FieldError(f"{where}.station", f"{stop.station} appears twice"))
        seen_stations.add(stop.station)
        if i < last and stop.departure is None:
            errors.append(FieldError(f"{where}.departure", "required for every stop but the last"))
        if i > 0 and stop.arrival is None:
            errors.append(FieldError(f"{where}.arrival", "required for every stop but the first"))
        for attr in ("arrival", "departure"):
            value = getattr(stop, attr)
            if value is None:
                continue
            minute = stop.day * 1440 + _minutes(value)
            if minute < previous_minute:
                errors.append(FieldError(f"{where}.{attr}", "times must not go backwards"))
            previous_minute = minute
    cars: set[int] = set()
    total = 0
    for i, coach in enumerate(definition.coaches):
        if coach.car in cars:
            errors.append(FieldError(f"coaches[{i}].car", f"car {coach.car} appears twice"))
        cars.add(coach.car)
        if len(set(coach.seats)) != len(coach.seats):
            errors.append(FieldError(f"coaches[{i}].seats", "seat labels must be unique"))
        total += len(coach.seats)
    if total > MAX_SEATS:
        errors.append(FieldError("coaches", f"at most {MAX_SEATS} seats in all, got {total}"))
    return errors


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def stop_departure(definition: ScheduleDef, index: int, timezone: str) -> dt.datetime:
    """When a journey from stop ``index`` stops selling: its departure (arrival for the last)."""
    stop = definition.stops[index]
    clock = stop.departure or stop.arrival or "00:00"
    day = definition.departure_date + dt.timedelta(days=stop.day)
    hour, minute = (int(part) for part in clock.split(":"))
    local = dt.datetime.combine(day, dt.time(hour, minute))
    return local.replace(tzinfo=zoneinfo.ZoneInfo(timezone))


# --- bookings -------------------------------------------------------------------------------

PassengerType = Literal["adult", "child", "infant", "senior"]
PaymentMethod = Literal["credit_card", "debit_card", "wallet", "bank_transfer", "qris"]
SEAT_ID_PATTERN = r"^[0-9]{1,3}-[A-Za-z0-9]{1,8}$"
SeatId = Annotated[str, msgspec.Meta(pattern=SEAT_ID_PATTERN)]


class Passenger(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    id_number: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{4,32}$")]
    seat: SeatId
    type: PassengerType = "adult"


class Payment(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    method: PaymentMethod
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    amount: Annotated[str, msgspec.Meta(pattern=PRICE_PATTERN)]


class ConfirmRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    passengers: Annotated[list[Passenger], msgspec.Meta(min_length=1, max_length=MAX_SEATS)]
    payment: Payment


class Ticket(msgspec.Struct, frozen=True):
    ticket_number: str
    seat: str
    passenger: str
    qr: str


class Refund(msgspec.Struct, frozen=True):
    refund_reference: str
    amount: str
    status: str
    reason: str = "cancellation"


class Booking(msgspec.Struct, frozen=True, rename={"from_": "from"}):
    booking_number: str
    hold_id: str
    schedule_id: str
    from_: str
    to: str
    status: Literal["confirmed", "cancelled"]
    tickets: list[Ticket]
    user: str = msgspec.field(default="")

    def public(self) -> dict[str, object]:
        """The contract's booking body (the owner is not echoed)."""
        body = msgspec.structs.asdict(self)
        body.pop("user")
        body["from"] = body.pop("from_")
        return body
