from __future__ import annotations

import msgspec
import pytest

from kai_inventory.domain import ScheduleDef, stop_departure, validate_schedule

BODY = {
    "train": {"number": "7", "name": "Taksaka", "type": "express"},
    "departure_date": "2026-12-20",
    "stops": [
        {"station": "GMR", "name": "Gambir", "departure": "08:50"},
        {"station": "CN", "name": "Cirebon", "arrival": "11:40", "departure": "11:45"},
        {"station": "YK", "name": "Yogyakarta", "arrival": "15:10"},
    ],
    "coaches": [
        {"car": 1, "class": "executive", "base_price": "450000", "seats": ["1A", "1B", "1C"]}
    ],
}


def decode(body: object) -> ScheduleDef:
    return msgspec.json.decode(msgspec.json.encode(body), type=ScheduleDef)


def test_the_contract_example_is_a_sound_schedule() -> None:
    definition = decode(BODY)
    assert validate_schedule(definition) == []
    assert definition.coaches[0].cls == "executive"


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode({**BODY, "colour": "blue"})


def test_repeated_station_car_and_seat_are_reported_by_field() -> None:
    body = {
        **BODY,
        "stops": [*BODY["stops"], {"station": "CN", "arrival": "16:00"}],  # type: ignore[list-item]
        "coaches": [
            {"car": 1, "class": "economy", "seats": ["1A", "1A"]},
            {"car": 1, "class": "economy", "seats": ["2A"]},
        ],
    }
    fields = {error.field for error in validate_schedule(decode(body))}
    assert {"stops[3].station", "coaches[0].seats", "coaches[1].car"} <= fields


def test_times_going_backwards_are_refused_but_overnight_days_are_not() -> None:
    backwards = {
        **BODY,
        "stops": [
            {"station": "GMR", "departure": "20:00"},
            {"station": "YK", "arrival": "04:00"},
        ],
    }
    assert validate_schedule(decode(backwards))
    overnight = {
        **BODY,
        "stops": [
            {"station": "GMR", "departure": "20:00"},
            {"station": "YK", "arrival": "04:00", "day": 1},
        ],
    }
    assert validate_schedule(decode(overnight)) == []


def test_sale_closes_at_the_departure_of_the_from_stop_in_local_time() -> None:
    definition = decode(BODY)
    closes = stop_departure(definition, 1, "Asia/Jakarta")
    assert closes.isoformat() == "2026-12-20T11:45:00+07:00"
