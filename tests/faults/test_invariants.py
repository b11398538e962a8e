"""The invariant checker itself: it catches a double sale, a second booking for one hold,
a second hold for one key and a 500 in a client history (so a fault run that passes means
something)."""

from __future__ import annotations

from typing import Any

from tests.faults.invariants import check_replies, check_ws
from tests.faults.workload import Record, ScheduleSpec

SPEC = ScheduleSpec("S1", ["A", "B", "C", "D"], ["1-1A", "1-1B"], ["economy"])


def _confirm(hold: str, booking: str, seat: str, a: str, b: str, status: int = 201) -> Record:
    body: dict[str, Any] = {"booking_number": booking, "from": a, "to": b,
                            "tickets": [{"seat": seat}]}  # fmt: skip
    return Record("confirm", "u", "S1", 0, 0, status, body=body, hold_id=hold, booking=booking)


def test_overlapping_live_bookings_are_a_double_sale() -> None:
    history = [_confirm("h1", "B1", "1-1A", "A", "C"), _confirm("h2", "B2", "1-1A", "B", "D")]
    problems, _ = check_replies(history, [SPEC])
    assert any("sold twice in the replies" in p and "leg 1" in p for p in problems), problems


def test_adjacent_journeys_on_one_seat_and_cancelled_bookings_are_fine() -> None:
    history = [
        _confirm("h1", "B1", "1-1A", "A", "B"),
        _confirm("h2", "B2", "1-1A", "B", "D"),
        _confirm("h3", "B3", "1-1B", "A", "D"),
        Record("cancel", "u", "S1", 0, 0, 200, booking="B3"),
        _confirm("h4", "B4", "1-1B", "A", "D"),
        _confirm("h1", "B1", "1-1A", "A", "B", status=200),  # an idempotent retry
    ]
    problems, facts = check_replies(history, [SPEC])
    assert problems == []
    assert facts["cancel_ok"] == {"B3"}


def test_one_hold_confirmed_into_two_bookings_is_caught() -> None:
    history = [_confirm("h1", "B1", "1-1A", "A", "B"), _confirm("h1", "B9", "1-1A", "A", "B")]
    problems, _ = check_replies(history, [SPEC])
    assert any("hold h1 confirmed as" in p for p in problems)
    assert any("answered 201 2 times" in p for p in problems)


def test_one_idempotency_key_making_two_holds_and_any_500_are_caught() -> None:
    history = [
        Record("hold", "u", "S1", 0, 0, 201, body={"hold_id": "S1.x"}, key="k"),
        Record("hold", "u", "S1", 0, 0, 201, body={"hold_id": "S1.y"}, key="k"),
        Record("release", "u", "S1", 0, 0, 500, body={"code": "internal_error"}),
    ]
    problems, _ = check_replies(history, [SPEC])
    assert any("Idempotency-Key k made 2 holds" in p for p in problems)
    assert any("answers were 500" in p for p in problems)


def test_websocket_versions_that_go_back_are_caught() -> None:
    frames = [
        {"type": "snapshot", "sub": "c/s1", "version": 10},
        {"type": "update", "sub": "c/s1", "version": 12},
        {"type": "update", "sub": "c/s1", "version": 12},
        {"type": "snapshot", "sub": "c/s1", "version": 11},
    ]
    problems = check_ws(frames, "c/s1")
    assert len(problems) == 2, problems
    assert check_ws(frames[:2], "c/s1") == []
