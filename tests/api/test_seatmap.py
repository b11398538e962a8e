"""The pre-encoded seat map body is byte for byte the msgspec encoding of its ``SeatMapView``."""

from __future__ import annotations

import random

import msgspec
import pytest

from kai_inventory.api.schemas import CoachView, SeatMapView, SeatView
from kai_inventory.api.seatmap import SeatMapEncoder, SeatMapEncoders
from kai_inventory.engine.layout import Layout
from kai_inventory.engine.views import Snapshot, seat_states

STOPS = ["GMR", "JNG", "BKS", "CN", "PWT", "YK"]


def reference_body(layout: Layout, snap: Snapshot, a: int, b: int) -> bytes:
    states = seat_states(layout, snap, a, b)
    coaches = [
        CoachView(
            span.car,
            span.cls,  # type: ignore[arg-type]
            [SeatView(layout.seat_ids[i], states[i]) for i in range(span.start, span.end)],  # type: ignore[arg-type]
        )
        for span in sorted(layout.cars, key=lambda span: span.car)
    ]
    view = SeatMapView(snap.schedule_id, STOPS[a], STOPS[b], snap.version, coaches)
    return msgspec.json.encode(view)


def random_layout(rng: random.Random) -> Layout:
    """Cars out of order, odd sizes, and seat labels JSON must escape."""
    labels = ["1A", '2"B', "3\\C", "4é", "5\u2028D", "6\tE"]
    coaches = []
    for car in rng.sample(range(1, 9), rng.randint(1, 5)):
        cls = rng.choice(("economy", "executive", "business"))
        coaches.append((car, cls, [f"{k}{rng.choice(labels)}" for k in range(rng.randint(1, 21))]))
    far = 4_102_444_800_000
    return Layout.build("SM", STOPS, [far] * len(STOPS), coaches)


@pytest.mark.parametrize("seed", range(20))
def test_the_seat_map_body_is_the_encoded_view_for_any_occupancy(seed: int) -> None:
    rng = random.Random(seed)
    layout = random_layout(rng)
    size = layout.n_legs * layout.row_bytes
    # a bitmap may be shorter than its schedule's size (it reads as free past its end)
    sold = bytes(rng.choice((0, 0, 255, rng.randrange(256))) for _ in range(rng.randint(0, size)))
    taken = bytes(rng.choice((0, 0, 255, rng.randrange(256))) for _ in range(size))
    snap = Snapshot("SM", rng.randrange(10**13), "scheduled", 0, "", layout.layout_id, sold, taken)
    encoder = SeatMapEncoder(layout)
    for _ in range(5):
        a = rng.randrange(layout.n_legs)
        b = rng.randint(a + 1, layout.n_legs)
        assert encoder.body(snap, STOPS[a], STOPS[b], a, b) == reference_body(layout, snap, a, b)


def test_encoders_are_kept_per_layout_and_the_least_recently_used_goes_first() -> None:
    encoders = SeatMapEncoders()
    encoders.MAX = 2
    a, b, c = (random_layout(random.Random(seed)) for seed in (1, 2, 3))
    first = encoders.of(a)
    assert encoders.of(a) is first
    encoders.of(b)
    encoders.of(a)  # a is now the most recently used
    encoders.of(c)  # drops b
    assert encoders.of(a) is first
    assert list(encoders._by_layout) == [c.layout_id, a.layout_id]
