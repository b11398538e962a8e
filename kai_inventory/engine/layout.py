"""A schedule's seat layout: stops, seat ids in internal index order, class and car spans.

Internal seat indices are ordered by class (``CLASS_ORDER``), then car in the given order, then
seat order as given, so each class and each car is one contiguous index range. The layout id is
a short hash of stops, seat ids, classes and cars (not departures: a time change is not a layout
change). Stored in Redis as zlib-compressed msgpack of the coaches (``kai:{s:ID}:layout``),
about 400 bytes for 1,000 seats.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import zlib

import msgspec

from kai_inventory.domain import CLASS_ORDER


class ClassSpan(msgspec.Struct, frozen=True):
    cls: str
    start: int
    end: int  # exclusive


class CarSpan(msgspec.Struct, frozen=True):
    car: int
    cls: str
    start: int
    end: int  # exclusive


def _class_rank(cls: str) -> int:
    try:
        return CLASS_ORDER.index(cls)
    except ValueError:
        return len(CLASS_ORDER)


class Layout(msgspec.Struct, frozen=True, dict=True):
    schedule_id: str
    layout_id: str
    stops: list[str]
    departures_ms: list[int]  # per stop: the moment a journey from that stop stops selling
    seat_ids: list[str]
    classes: list[ClassSpan]
    cars: list[CarSpan]

    @classmethod
    def build(
        cls,
        schedule_id: str,
        stops: list[str],
        departures_ms: list[int],
        coaches: list[tuple[int, str, list[str]]],
    ) -> Layout:
        if len(stops) < 2:
            raise ValueError("a schedule needs at least two stops")
        if len(departures_ms) != len(stops):
            raise ValueError("one departure per stop")
        if len(set(stops)) != len(stops):
            raise ValueError("stops must be unique")
        ordered = sorted(coaches, key=lambda coach: _class_rank(coach[1]))  # stable: car order kept
        seat_ids: list[str] = []
        cars: list[CarSpan] = []
        classes: list[ClassSpan] = []
        for car, seat_class, labels in ordered:
            start = len(seat_ids)
            seat_ids.extend(f"{car}-{label}" for label in labels)
            cars.append(CarSpan(car, seat_class, start, len(seat_ids)))
            if classes and classes[-1].cls == seat_class:
                last = classes[-1]
                classes[-1] = ClassSpan(seat_class, last.start, len(seat_ids))
            else:
                classes.append(ClassSpan(seat_class, start, len(seat_ids)))
        if not seat_ids:
            raise ValueError("a schedule needs at least one seat")
        if len(set(seat_ids)) != len(seat_ids):
            raise ValueError("seat ids must be unique")
        return cls(
            schedule_id=schedule_id,
            layout_id=_layout_id(stops, seat_ids, classes, cars),
            stops=list(stops),
            departures_ms=list(departures_ms),
            seat_ids=seat_ids,
            classes=classes,
            cars=cars,
        )

    @property
    def n_seats(self) -> int:
        return len(self.seat_ids)

    @property
    def n_legs(self) -> int:
        return len(self.stops) - 1

    @property
    def row_bytes(self) -> int:
        """Seat groups (8 seats a byte) in the sold/taken bitmaps: the bytes of one leg's row."""
        return (self.n_seats + 7) // 8

    @functools.cached_property
    def _seat_index(self) -> dict[str, int]:
        return {seat: i for i, seat in enumerate(self.seat_ids)}

    @functools.cached_property
    def _stop_index(self) -> dict[str, int]:
        return {stop: i for i, stop in enumerate(self.stops)}

    @functools.cached_property
    def _car_starts(self) -> list[int]:
        return [span.start for span in self.cars]

    @functools.cached_property
    def _class_starts(self) -> list[int]:
        return [span.start for span in self.classes]

    def seat_index(self, seat_id: str) -> int | None:
        return self._seat_index.get(seat_id)

    def stop_index(self, code: str) -> int | None:
        return self._stop_index.get(code)

    def leg_range(self, from_code: str, to_code: str) -> tuple[int, int] | None:
        """The half-open leg range [a, b) of a journey; None if a stop is unknown or not before."""
        a = self._stop_index.get(from_code)
        b = self._stop_index.get(to_code)
        if a is None or b is None or a >= b:
            return None
        return a, b

    def class_span(self, seat_class: str) -> ClassSpan | None:
        for span in self.classes:
            if span.cls == seat_class:
                return span
        return None

    def cars_of_class(self, seat_class: str) -> list[CarSpan]:
        return [span for span in self.cars if span.cls == seat_class]

    def class_of(self, index: int) -> str:
        return self.classes[bisect.bisect_right(self._class_starts, index) - 1].cls

    def car_of(self, index: int) -> int:
        return self.cars[bisect.bisect_right(self._car_starts, index) - 1].car

    # Fields of the Redis meta hash that scripts read (see DESIGN.md).
    def meta_classes(self) -> str:
        return ",".join(f"{s.cls}:{s.start}:{s.end}" for s in self.classes)

    def meta_cars(self) -> str:
        return ",".join(f"{s.start}:{s.end}" for s in self.cars)

    def meta_departures(self) -> str:
        return ",".join(str(ms) for ms in self.departures_ms)

    def encode(self) -> bytes:
        """Compact form: coaches as (car, class, labels), rebuilt by ``build`` on decode."""
        coaches = [
            (
                span.car,
                span.cls,
                [seat.split("-", 1)[1] for seat in self.seat_ids[span.start : span.end]],
            )
            for span in self.cars
        ]
        wire = _Wire(self.schedule_id, self.stops, self.departures_ms, coaches)
        return zlib.compress(_ENCODER.encode(wire), 9)

    @classmethod
    def decode(cls, data: bytes) -> Layout:
        wire = _DECODER.decode(zlib.decompress(data))
        return cls.build(wire.schedule_id, wire.stops, wire.departures_ms, wire.coaches)


class _Wire(msgspec.Struct, array_like=True, frozen=True):
    schedule_id: str
    stops: list[str]
    departures_ms: list[int]
    coaches: list[tuple[int, str, list[str]]]


def _layout_id(
    stops: list[str], seat_ids: list[str], classes: list[ClassSpan], cars: list[CarSpan]
) -> str:
    digest = hashlib.sha256()
    digest.update("\x1f".join(stops).encode())
    digest.update(b"\x1e")
    digest.update("\x1f".join(seat_ids).encode())
    digest.update(b"\x1e")
    digest.update(",".join(f"{s.cls}:{s.start}:{s.end}" for s in classes).encode())
    digest.update(b"\x1e")
    digest.update(",".join(f"{s.car}:{s.cls}:{s.start}:{s.end}" for s in cars).encode())
    return digest.hexdigest()[:16]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Wire)
