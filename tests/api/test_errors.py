"""Problem details: shape, codes, and msgspec error translation (no server needed)."""

from __future__ import annotations

import msgspec
import pytest

from kai_inventory.api.common import decode_body
from kai_inventory.api.errors import (
    PROBLEMS,
    ApiError,
    as_dict,
    field_error_from_validation,
    retry_after,
)
from kai_inventory.domain import FieldError, ScheduleDef


def test_every_contract_code_has_its_status() -> None:
    contract = {
        "invalid_request": 422,
        "malformed_json": 400,
        "unauthorized": 401,
        "forbidden": 403,
        "schedule_not_found": 404,
        "hold_not_found": 404,
        "booking_not_found": 404,
        "seats_unavailable": 409,
        "insufficient_inventory": 409,
        "hold_limit": 409,
        "sale_closed": 409,
        "hold_released": 409,
        "hold_confirmed": 409,
        "schedule_in_use": 409,
        "payload_too_large": 413,
        "hold_expired": 410,
        "idempotency_conflict": 409,
        "rate_limited": 429,
        "dependency_unavailable": 503,
    }
    for code, status in contract.items():
        assert PROBLEMS[code][0] == status, code


def test_problem_has_the_rfc9457_members_and_only_the_extras_given() -> None:
    body = as_dict(ApiError("seats_unavailable", "taken", unavailable=["1-1A"]).problem("rid"))
    assert body == {
        "type": "https://kai-inventory.example/problems/seats-unavailable",
        "title": "Seats unavailable",
        "status": 409,
        "code": "seats_unavailable",
        "detail": "taken",
        "unavailable": ["1-1A"],
        "request_id": "rid",
    }


def test_unknown_problem_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown problem code"):
        ApiError("no_such_code", "x")


@pytest.mark.parametrize(
    ("seconds", "header"), [(0, 1), (0.2, 1), (1.0, 1), (1.001, 2), (59.5, 60)]
)
def test_retry_after_rounds_up_to_whole_seconds_at_least_one(seconds: float, header: int) -> None:
    assert retry_after(seconds) == header
    assert ApiError("rate_limited", "x", retry_after_s=seconds).headers["Retry-After"] == str(
        header
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"train": {"number": "1", "name": "x", "zzz": 1}}', "train.zzz"),
        (b'{"train": 1}', "train"),
        (b"{}", "train"),
        (b'{"coaches": [{"class": "bad"}]}', "coaches[0].class"),
        (b"[1]", "body"),
    ],
)
def test_validation_errors_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_body(body, ScheduleDef)
    assert caught.value.code == "invalid_request"
    assert caught.value.errors is not None
    assert caught.value.errors[0].field == field


def test_nested_path_of_a_msgspec_message_becomes_a_dotted_field() -> None:
    error = field_error_from_validation("Expected `str`, got `int` - at `$.stops[0].station`")
    assert error == FieldError("stops[0].station", "Expected `str`, got `int`")


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"train": }', b"\xff\xfe", b"  "])
def test_broken_json_is_malformed_not_invalid(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        decode_body(body, ScheduleDef)
    assert caught.value.code == "malformed_json"
    assert caught.value.status == 400


def test_truncated_json_with_a_wrong_type_early_is_still_malformed() -> None:
    # msgspec validates while parsing and would report the type error first.
    with pytest.raises(ApiError) as caught:
        decode_body(b'{"train": 1, "stops": [', ScheduleDef)
    assert caught.value.code == "malformed_json"


def test_decoded_body_is_the_struct() -> None:
    raw = msgspec.json.encode(
        {
            "train": {"number": "7", "name": "Taksaka"},
            "departure_date": "2026-12-20",
            "stops": [
                {"station": "GMR", "departure": "08:00"},
                {"station": "YK", "arrival": "15:00"},
            ],
            "coaches": [{"car": 1, "class": "economy", "seats": ["1A"]}],
        }
    )
    assert isinstance(decode_body(raw, ScheduleDef), ScheduleDef)


_DEEP = 5000  # past the interpreter's recursion limit, where untyped decoding stops


@pytest.mark.parametrize(
    "body",
    [
        b"[" * _DEEP + b"]" * _DEEP,
        b'{"queries": ' + b"[" * _DEEP + b"]" * _DEEP + b"}",
        b'{"a": ' * _DEEP + b"1" + b"}" * _DEEP,
    ],
    ids=["top-level", "in-a-field", "objects"],
)
def test_a_body_nested_past_the_recursion_limit_is_malformed_not_a_crash(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        decode_body(body, ScheduleDef)
    assert caught.value.code == "malformed_json"
    assert caught.value.status == 400
