"""Reads computed in Python from a snapshot: availability per class and seat maps per journey.

A snapshot carries the schedule's sold and taken (sold or held) bitmaps, seat-group-major: byte
``j*legs + k`` holds seats ``8j..8j+7`` of leg ``k``, most significant bit first (docs/ENGINE.md).
A seat-leg is held when it is taken and not sold. Leg ``k``'s
row is the strided slice ``bitmap[k::legs]`` (one C-level copy), read as a big int whose bit
``i`` from the top is seat ``i``. A journey's occupancy is the OR of its leg rows; results are
cached per (schedule, layout, version, bitmaps, journey), so a repeated read costs a dict lookup.
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from kai_inventory.engine.layout import Layout


class ClassAvailability(msgspec.Struct, frozen=True, rename={"cls": "class"}):
    cls: str
    total: int
    available: int


class Snapshot(msgspec.Struct, frozen=True):
    schedule_id: str
    version: int
    status: str
    delay_minutes: int
    reason: str
    layout_id: str
    sold: bytes
    taken: bytes  # sold or held


_CACHE_SIZE = 4096
_masks: OrderedDict[tuple[str, str, int, int, int, int, int], tuple[int, int]] = OrderedDict()


def leg_row(bitmap: bytes, leg: int, legs: int, row_bytes: int) -> int:
    """Leg ``leg``'s seats as a big int of ``row_bytes`` bytes (a short bitmap reads as free)."""
    row = bitmap[leg::legs]
    return int.from_bytes(row, "big") << (8 * (row_bytes - len(row)))


def journey_masks(layout: Layout, snap: Snapshot, a: int, b: int) -> tuple[int, int]:
    """(sold, taken) as big ints over the row width: a seat's bit is set if any leg in [a, b) is."""
    if not 0 <= a < b <= layout.n_legs:
        raise ValueError(f"bad leg range [{a}, {b}) for {layout.n_legs} legs")
    # bytes cache their hash, so keying on the bitmaps' hashes costs O(1) after the first read
    key = (snap.schedule_id, snap.layout_id, snap.version, hash(snap.sold), hash(snap.taken), a, b)
    hit = _masks.get(key)
    if hit is not None:
        _masks.move_to_end(key)
        return hit
    rb, legs = layout.row_bytes, layout.n_legs
    sold = 0
    taken = 0
    for leg in range(a, b):
        sold |= leg_row(snap.sold, leg, legs, rb)
        taken |= leg_row(snap.taken, leg, legs, rb)
    result = (sold, taken)
    _masks[key] = result
    if len(_masks) > _CACHE_SIZE:
        _masks.popitem(last=False)
    return result


def _span_mask(row_bits: int, start: int, end: int) -> int:
    return ((1 << (end - start)) - 1) << (row_bits - end)


def availability(layout: Layout, snap: Snapshot, a: int, b: int) -> list[ClassAvailability]:
    """Free seats per class for legs [a, b), one entry per class the train has, in CLASS_ORDER."""
    taken = journey_masks(layout, snap, a, b)[1]
    row_bits = layout.row_bytes * 8
    out: list[ClassAvailability] = []
    for span in layout.classes:
        mask = _span_mask(row_bits, span.start, span.end)
        total = span.end - span.start
        out.append(ClassAvailability(span.cls, total, total - (taken & mask).bit_count()))
    return out


def seat_states(layout: Layout, snap: Snapshot, a: int, b: int) -> list[str]:
    """Per internal index: "sold" if any leg is sold, else "held" if any is taken (held, then),
    else "free"."""
    sold, taken = journey_masks(layout, snap, a, b)
    width = layout.row_bytes * 8
    sold_bits = format(sold, f"0{width}b")
    taken_bits = format(taken, f"0{width}b")
    return [
        "sold" if s == "1" else ("held" if t == "1" else "free")
        for s, t in zip(sold_bits[: layout.n_seats], taken_bits[: layout.n_seats], strict=True)
    ]


def leg_counts(layout: Layout, snap: Snapshot) -> list[tuple[int, int]]:
    """Per leg: (sold seats, held seats). Used by checks and metrics."""
    rb, legs = layout.row_bytes, layout.n_legs
    out = []
    for leg in range(legs):
        sold = leg_row(snap.sold, leg, legs, rb).bit_count()
        out.append((sold, leg_row(snap.taken, leg, legs, rb).bit_count() - sold))
    return out
