"""Layout ordering, journeys and encoding; availability and seat maps from bitmaps."""

from __future__ import annotations

from typing import Any

import pytest

from kai_inventory.engine import views
from kai_inventory.engine.layout import Layout


def test_seats_are_ordered_by_class_then_car_order_then_seat_order(make_layout: Any) -> None:
    layout = make_layout("L")
    assert layout.seat_ids[:4] == ["1-1A", "1-1B", "1-1C", "1-1D"]  # executive first
    assert layout.seat_ids[4:8] == ["2-1A", "2-1B", "2-1C", "2-1D"]  # then economy, car order
    assert layout.seat_ids[8:] == ["3-1A", "3-1B", "3-1C", "3-1D"]
    assert [(c.cls, c.start, c.end) for c in layout.classes] == [
        ("executive", 0, 4),
        ("economy", 4, 12),
    ]
    assert [(c.car, c.start, c.end) for c in layout.cars] == [(1, 0, 4), (2, 4, 8), (3, 8, 12)]
    assert layout.class_of(5) == "economy"
    assert layout.class_of(3) == "executive"
    assert layout.car_of(8) == 3
    assert layout.car_of(0) == 1
    assert layout.seat_index("3-1B") == 9
    assert layout.seat_index("9-9Z") is None


def test_leg_range_is_half_open_and_refuses_unknown_or_backward_stops(make_layout: Any) -> None:
    layout = make_layout("L")
    assert layout.n_legs == 4
    assert layout.leg_range("GMR", "YK") == (0, 4)
    assert layout.leg_range("CN", "PWT") == (2, 3)
    assert layout.leg_range("PWT", "CN") is None
    assert layout.leg_range("CN", "CN") is None
    assert layout.leg_range("XX", "YK") is None


def test_layout_id_ignores_departures_but_not_seats(make_layout: Any) -> None:
    a = make_layout("L", departures_ms=[1, 2, 3, 4, 5])
    b = make_layout("L", departures_ms=[9, 9, 9, 9, 9])
    c = make_layout("L", coaches=[(1, "economy", ["1A"])])
    assert a.layout_id == b.layout_id != c.layout_id


def test_encode_decode_round_trips(make_layout: Any) -> None:
    layout = make_layout("L")
    back = Layout.decode(layout.encode())
    assert back == layout
    assert back.seat_index("2-1C") == 6
    assert len(layout.encode()) < 400


def test_build_refuses_duplicate_seats() -> None:
    with pytest.raises(ValueError, match="unique"):
        Layout.build("L", ["A", "B"], [0, 0], [(1, "economy", ["1A"]), (1, "economy", ["1A"])])


def _bitmap(layout: Layout, bits: set[tuple[int, int]]) -> bytes:
    legs = layout.n_legs
    out = bytearray(layout.row_bytes * legs)
    for seat, leg in bits:
        out[seat // 8 * legs + leg] |= 0x80 >> (seat % 8)
    return bytes(out)


def test_views_read_seat_group_major_bitmaps_msb_first(make_layout: Any) -> None:
    layout = make_layout("L")
    sold = _bitmap(layout, {(0, 0), (5, 2)})
    taken = _bitmap(layout, {(0, 0), (5, 2), (0, 1), (9, 3)})  # sold or held
    snap = views.Snapshot("L", 1, "scheduled", 0, "", layout.layout_id, sold, taken)
    states = views.seat_states(layout, snap, 0, 4)
    assert states[0] == "sold"
    assert states[5] == "sold"
    assert states[9] == "held"
    assert states.count("free") == 9
    assert views.seat_states(layout, snap, 1, 2)[0] == "held"
    assert views.seat_states(layout, snap, 3, 4) == [
        "held" if i == 9 else "free" for i in range(12)
    ]
    got = [(c.cls, c.total, c.available) for c in views.availability(layout, snap, 0, 4)]
    assert got == [("executive", 4, 3), ("economy", 8, 6)]
    assert views.leg_counts(layout, snap) == [(1, 0), (0, 1), (1, 0), (0, 1)]
    # a short bitmap (trailing zero bytes trimmed) reads the same
    trimmed = views.Snapshot("L", 2, "scheduled", 0, "", layout.layout_id, sold, taken[:-1])
    assert views.seat_states(layout, trimmed, 3, 4)[9] == "free"


def test_views_refuse_a_bad_leg_range(make_layout: Any) -> None:
    layout = make_layout("L")
    snap = views.Snapshot("L", 1, "scheduled", 0, "", layout.layout_id, b"", b"")
    with pytest.raises(ValueError, match="leg range"):
        views.availability(layout, snap, 2, 2)
    assert [c.available for c in views.availability(layout, snap, 0, 4)] == [4, 8]
