"""The post-run checks: thresholds from thresholds.toml and the oversell detectors."""

from __future__ import annotations

from pathlib import Path

import checks
import pytest
from checks import HeldSeat, StatRow, Thresholds, Ticket

THRESHOLDS = Path(checks.__file__).with_name("thresholds.toml")

STATS_CSV = "\n".join(
    [
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
        "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
        "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%",
        "POST,POST /v1/holds [class],1000,1,12,14.2,3,90,300,50.0,0.05,"
        "12,13,14,15,18,22,30,41,80,90,90",
        "GET,GET /v1/schedules/{id}/seatmap,500,0,20,22,5,400,9000,25.0,0,"
        "20,21,22,23,25,30,40,320,390,400,400",
        "WS,WS update lag [hold],0,0,0,0,0,0,0,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A",
        ",Aggregated,1500,1,15,17,3,400,3000,75.0,0.05,15,16,17,18,20,25,35,60,200,400,400",
        "",
    ]
)


def _stats(tmp_path: Path) -> dict[str, StatRow]:
    (tmp_path / "run_stats.csv").write_text(STATS_CSV)
    return checks.read_stats(str(tmp_path / "run"))


def test_read_stats_takes_p99_per_request_name_and_na_as_none(tmp_path: Path) -> None:
    stats = _stats(tmp_path)
    assert stats["POST /v1/holds [class]"] == StatRow("POST /v1/holds [class]", 1000, 1, 41.0)
    assert stats["WS update lag [hold]"].p99_ms is None
    assert stats["Aggregated"].requests == 1500


def test_profile_overrides_defaults_key_by_key() -> None:
    smoke = checks.load_thresholds(THRESHOLDS, "smoke")
    base = checks.load_thresholds(THRESHOLDS)
    assert smoke.max_error_rate == base.max_error_rate == 0.001
    assert smoke.max_5xx == 0
    assert smoke.p99_ms["POST /v1/holds [class]"] > base.p99_ms["POST /v1/holds [class]"]
    assert smoke.required == base.required
    assert "POST /v1/holds/{id}/confirm" in smoke.required


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(KeyError):
        checks.load_thresholds(THRESHOLDS, "nope")


def test_a_clean_run_passes(tmp_path: Path) -> None:
    stats = _stats(tmp_path)
    rules = Thresholds(max_error_rate=0.001, p99_ms={"POST /v1/holds [class]": 50})
    assert checks.evaluate(stats, {"x": {"201": 999, "409": 1}}, rules, oversold=0) == []


def test_each_missed_threshold_is_reported(tmp_path: Path) -> None:
    stats = _stats(tmp_path)
    rules = Thresholds(
        max_error_rate=0.0001,
        min_requests=2000,
        p99_ms={"GET /v1/schedules/{id}/seatmap": 300},
        required=["WS update lag [hold]"],
    )
    problems = checks.evaluate(stats, {"POST /v1/holds [class]": {"503": 2}}, rules, oversold=3)
    text = "\n".join(problems)
    assert "error rate" in text
    assert "only 1500 requests" in text
    assert "2 answers were 5xx" in text
    assert "3 seat-legs oversold" in text
    assert "seatmap: p99 320 ms > 300 ms" in text
    assert "WS update lag [hold]: never ran" in text
    assert len(problems) == 6


def test_a_run_without_requests_fails() -> None:
    assert checks.evaluate({}, {}, Thresholds(), 0) == ["no requests were made"]


def test_overlapping_legs_of_one_seat_are_found_and_adjacent_ones_are_not() -> None:
    tickets = [
        Ticket("s", "1-1A", 0, 3, "B1"),
        Ticket("s", "1-1A", 3, 5, "B2"),  # resold after B1 gets off: fine
        Ticket("s", "1-1B", 0, 9, "B3"),
        Ticket("s", "1-1B", 4, 5, "B4"),  # inside B3
        Ticket("t", "1-1A", 1, 2, "B5"),  # another schedule
    ]
    clashes = checks.find_overlaps(tickets)
    assert [(a.ref, b.ref) for a, b in clashes] == [("B3", "B4")]
    assert checks.oversold_seat_legs(tickets) == {("s", "1-1B", 4)}


def test_overlap_with_an_earlier_longer_ticket_is_found() -> None:
    tickets = [Ticket("s", "2-3C", 0, 8, "A"), Ticket("s", "2-3C", 1, 2, "B")]
    tickets.append(Ticket("s", "2-3C", 5, 6, "C"))
    assert {(a.ref, b.ref) for a, b in checks.find_overlaps(tickets)} == {("A", "B"), ("A", "C")}
    assert len(checks.oversold_seat_legs(tickets)) == 2


def test_tickets_from_summary_turn_stations_into_leg_ranges() -> None:
    summary = {
        "run": "lt1",
        "schedules": [
            {
                "schedule_id": "lt1-peak",
                "stops": ["GMR", "CN", "PWT", "YK"],
                "date": "",
                "coaches": [],
            }
        ],
        "tickets": [
            {"schedule_id": "lt1-peak", "seat": "1-1A", "from": "CN", "to": "YK", "booking": "K1"}
        ],
    }
    assert checks.tickets_from_summary(summary) == [Ticket("lt1-peak", "1-1A", 1, 3, "K1")]


def test_oversell_check_counts_double_sales_among_the_run_s_own_tickets() -> None:
    summary = {
        "run": "lt1",
        "schedules": [{"schedule_id": "x", "stops": ["A", "B", "C"], "date": "", "coaches": []}],
        "tickets": [
            {"schedule_id": "x", "seat": "1-1A", "from": "A", "to": "C", "booking": "K1"},
            {"schedule_id": "x", "seat": "1-1A", "from": "B", "to": "C", "booking": "K2"},
        ],
    }
    report = checks.oversell_check(summary, base_url=None, database_url=None)
    assert report.oversold == 1
    assert any("sold twice" in line for line in report.lines)


def test_held_twice_finds_two_holds_of_one_seat_leg_at_the_same_time() -> None:
    first = HeldSeat("S", 7, 0, 3, start=1_000, end=3_000, ref="h1")
    holds = [
        first,
        HeldSeat("S", 7, 3, 5, start=1_500, end=3_500, ref="other legs"),
        HeldSeat("S", 8, 0, 3, start=1_500, end=3_500, ref="other seat"),
        HeldSeat("T", 7, 0, 3, start=1_500, end=3_500, ref="other schedule"),
        HeldSeat("S", 7, 0, 1, start=3_000, end=5_000, ref="after it ended"),
    ]
    assert checks.held_twice(holds) == []
    clash = HeldSeat("S", 7, 1, 3, start=2_999, end=4_000, ref="h2")
    assert checks.held_twice([*holds, clash]) == [(first, clash)]
