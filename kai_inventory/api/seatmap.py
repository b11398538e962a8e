"""The seat map body from pieces encoded once per layout.

A seat map of 1,000 seats is ~40 KB of JSON; built as 1,000 ``SeatView`` structs and encoded,
it cost ~300 µs per read, and during a sale the schedule's version moves with every hold, so the
per-version body cache (``reads.BodyCache``) rarely helps. Here each seat's three possible
``{"seat":...,"state":...}`` objects and each coach's head are encoded once per layout (by
msgspec, so escaping is msgspec's own); a read picks one piece per seat from the journey's sold
and taken masks and joins them. The bytes are exactly ``msgspec.json.encode(SeatMapView(...))``
(pinned by ``tests/api/test_seatmap.py``).
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from kai_inventory.api.schemas import CoachView, SeatMapView, SeatView
from kai_inventory.engine.layout import Layout
from kai_inventory.engine.views import Snapshot, journey_masks

_STATES = ("free", "held", "sold")


class SeatMapEncoder:
    """One layout's pre-encoded seat map pieces."""

    def __init__(self, layout: Layout) -> None:
        encode = msgspec.json.encode
        self.layout = layout
        # per seat, indexed by state: 0 free, 1 held, 2 sold
        self._seats = [
            tuple(encode(SeatView(seat_id, state)) for state in _STATES)  # type: ignore[arg-type]
            for seat_id in layout.seat_ids
        ]
        # per coach in car order: the head up to the seats' opening bracket, and its seats
        self._coaches: list[tuple[bytes, range]] = []
        for span in sorted(layout.cars, key=lambda span: span.car):
            empty = encode(CoachView(span.car, span.cls, []))  # type: ignore[arg-type]
            head = empty[: -len(b"]}")]
            self._coaches.append((head, range(span.start, span.end)))

    def body(self, snap: Snapshot, origin: str, destination: str, a: int, b: int) -> bytes:
        """The seat map of ``snap`` (a snapshot of this encoder's layout) for legs [a, b)."""
        layout = self.layout
        sold, taken = journey_masks(layout, snap, a, b)
        n, width = layout.n_seats, layout.row_bytes * 8
        sold_bits = format(sold, f"0{width}b")[:n]
        taken_bits = format(taken, f"0{width}b")[:n]
        seats = self._seats
        # the state index: 2 when sold on any leg, else 1 when taken (held), else 0
        pieces = [
            piece[2] if s == "1" else piece[t == "1"]
            for piece, s, t in zip(seats, sold_bits, taken_bits, strict=True)
        ]
        coaches = [
            head + b",".join(pieces[span.start : span.stop]) + b"]}" for head, span in self._coaches
        ]
        empty = msgspec.json.encode(
            SeatMapView(snap.schedule_id, origin, destination, snap.version, [])
        )
        return empty[: -len(b"]}")] + b",".join(coaches) + b"]}"


class SeatMapEncoders:
    """Encoders by layout id, least recently used dropped past ``MAX``: an encoder of 1,000
    seats holds ~260 KiB and takes a few ms to build, so ``MAX`` bounds a worker at ~8 MiB."""

    MAX = 32

    def __init__(self) -> None:
        self._by_layout: OrderedDict[str, SeatMapEncoder] = OrderedDict()

    def of(self, layout: Layout) -> SeatMapEncoder:
        encoder = self._by_layout.get(layout.layout_id)
        if encoder is not None:
            self._by_layout.move_to_end(layout.layout_id)
            return encoder
        encoder = self._by_layout[layout.layout_id] = SeatMapEncoder(layout)
        while len(self._by_layout) > self.MAX:
            self._by_layout.popitem(last=False)
        return encoder
