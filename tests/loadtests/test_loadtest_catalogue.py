"""The load test's own schedules are valid catalogue bodies and its tokens are real tokens."""

from __future__ import annotations

import jwt
import kaiload
import msgspec

from kai_inventory.domain import ScheduleDef, validate_schedule


def test_run_schedules_are_valid_put_bodies_with_a_popular_train_first() -> None:
    schedules = kaiload.build_run_schedules("lt0a", n_browse=3)
    assert [s.schedule_id for s in schedules] == ["lt0a-peak", "lt0a-b0", "lt0a-b1", "lt0a-b2"]
    for info in schedules:
        body = msgspec.convert(kaiload.schedule_definition(info, "99", "Load"), ScheduleDef)
        assert validate_schedule(body) == []
        assert sum(len(c.seats) for c in body.coaches) == sum(
            len(v) for v in info.seats_by_class.values()
        )
    assert len(schedules[0].seats_by_class["economy"]) > len(schedules[1].seats_by_class["economy"])


def test_a_64_stop_schedule_rolls_its_times_into_later_days() -> None:
    info = kaiload.make_schedule_info(
        "long", list(kaiload.STATIONS[:64]), "2030-01-01", kaiload.standard_coaches(1, 1)
    )
    body = msgspec.convert(kaiload.schedule_definition(info, "1", "Long"), ScheduleDef)
    assert validate_schedule(body) == []
    # 06:00 plus 63 stops 40 minutes apart: midnight two days later
    assert (body.stops[-1].day, body.stops[-1].arrival) == (2, "00:00")


def test_seat_labels_are_rows_of_four() -> None:
    assert kaiload.seat_labels(6) == ["1A", "1B", "1C", "1D", "2A", "2B"]


def test_schedule_info_round_trips_through_json() -> None:
    info = kaiload.build_run_schedules("lt0b", n_browse=0)[0]
    again = kaiload.ScheduleInfo.from_json(info.to_json())
    assert again.seats_by_class == info.seats_by_class
    assert again.price_by_seat["1-1A"] == 450_000


def test_minted_tokens_carry_sub_scope_and_expiry_signed_hs256() -> None:
    token = kaiload.mint_token("u1", "inventory:hold", ttl_s=60, secret="s" * 32)
    claims = jwt.decode(token, "s" * 32, algorithms=["HS256"])
    assert claims["sub"] == "u1"
    assert claims["scope"] == "inventory:hold"
    assert claims["exp"] > 0
