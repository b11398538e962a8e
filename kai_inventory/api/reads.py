"""Reads: search, a schedule as defined, availability, seat maps, and the batch query.

Availability and seat maps come from the engine: the cached ``Layout`` plus one cheap
``snapshot`` round trip, computed here in Python. A schedule the engine does not know is asked
of ``sales.ensure_schedule`` first (Redis may have lost it and Postgres still has it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from aiohttp import web

from kai_inventory.api.common import (
    ctx,
    encode_json,
    json_response,
    parse_query,
    raw_json_response,
    read_body,
    reader,
)
from kai_inventory.api.errors import ApiError, invalid_many
from kai_inventory.api.schemas import (
    AvailabilityQuery,
    AvailabilityView,
    ItemError,
    JourneyParams,
    QueryItemError,
    QueryResults,
    SearchParams,
    SearchResponse,
)
from kai_inventory.api.seatmap import SeatMapEncoders
from kai_inventory.context import AppContext
from kai_inventory.domain import SCHEDULE_ID_PATTERN, FieldError
from kai_inventory.engine.layout import Layout
from kai_inventory.engine.views import Snapshot, availability

_SCHEDULE_ID = re.compile(SCHEDULE_ID_PATTERN)


def schedule_not_found(schedule_id: str) -> ApiError:
    return ApiError("schedule_not_found", f"no schedule {schedule_id!r}")


def valid_schedule_id(schedule_id: str) -> bool:
    return _SCHEDULE_ID.match(schedule_id) is not None


async def find_layout(c: AppContext, schedule_id: str) -> Layout | None:
    """The schedule's layout, reopening it from Postgres when Redis has lost it."""
    if not valid_schedule_id(schedule_id):
        return None
    layout = await c.inventory.layout(schedule_id)
    if layout is None:
        layout = await c.sales.ensure_schedule(schedule_id)
    return layout


async def layout_or_404(c: AppContext, schedule_id: str) -> Layout:
    layout = await find_layout(c, schedule_id)
    if layout is None:
        raise schedule_not_found(schedule_id)
    return layout


async def snapshot_or_404(c: AppContext, schedule_id: str) -> Snapshot:
    snap = await c.inventory.snapshot(schedule_id)
    if snap is None and await c.sales.ensure_schedule(schedule_id) is not None:
        snap = await c.inventory.snapshot(schedule_id)
    if snap is None:
        raise schedule_not_found(schedule_id)
    return snap


async def layout_and_snapshot(c: AppContext, schedule_id: str) -> tuple[Layout, Snapshot]:
    """A layout and a snapshot that belong together (the layout is re-read if it was replaced)."""
    layout = await layout_or_404(c, schedule_id)
    snap = await snapshot_or_404(c, schedule_id)
    if snap.layout_id != layout.layout_id:
        layout = await layout_or_404(c, schedule_id)  # the snapshot dropped the stale cache
    return layout, snap


def journey_problems(layout: Layout, from_code: str, to_code: str) -> list[FieldError]:
    """Why ``from_code -> to_code`` is not a journey of this schedule (empty: it is one)."""
    errors = []
    a = layout.stop_index(from_code)
    b = layout.stop_index(to_code)
    if a is None:
        errors.append(FieldError("from", f"{from_code} is not a stop of this schedule"))
    if b is None:
        errors.append(FieldError("to", f"{to_code} is not a stop of this schedule"))
    if a is not None and b is not None and a >= b:
        errors.append(
            FieldError("to", f"{to_code} does not come after {from_code} on this schedule")
        )
    return errors


def journey_or_422(
    layout: Layout, from_code: str | None, to_code: str | None
) -> tuple[str, str, int, int]:
    origin = from_code or layout.stops[0]
    destination = to_code or layout.stops[-1]
    legs = layout.leg_range(origin, destination)
    if legs is None:
        raise invalid_many(journey_problems(layout, origin, destination))
    return origin, destination, legs[0], legs[1]


# --- handlers ------------------------------------------------------------------------------


async def search(request: web.Request) -> web.Response:
    reader(request)
    params = parse_query(request, SearchParams)
    if params.from_ == params.to:
        raise invalid_many([FieldError("to", "must differ from 'from'")])
    results = await ctx(request).sales.search(params.from_, params.to, params.date)
    return json_response(SearchResponse(results))


async def get_schedule(request: web.Request) -> web.Response:
    reader(request)
    schedule_id = request.match_info["schedule_id"]
    view = None
    if valid_schedule_id(schedule_id):
        view = await ctx(request).sales.get_schedule(schedule_id)
    if view is None:
        raise schedule_not_found(schedule_id)
    return json_response(view)


async def journey_read(request: web.Request) -> tuple[str, Layout, Snapshot, str, str, int, int]:
    """What every per-journey read needs: the schedule's layout and snapshot, and the journey
    (``from``/``to`` default to the first and last stop) with its leg range."""
    reader(request)
    schedule_id = request.match_info["schedule_id"]
    params = parse_query(request, JourneyParams)
    layout, snap = await layout_and_snapshot(ctx(request), schedule_id)
    origin, destination, a, b = journey_or_422(layout, params.from_, params.to)
    return schedule_id, layout, snap, origin, destination, a, b


BodyKey = tuple[str, str, str, int, int, int]


class BodyCache:
    """Encoded bodies of this app's per-journey reads by (read, schedule, layout id, version,
    journey): a version names one state of the schedule, so a read of an unchanged schedule
    reuses the bytes (a seat map of 1,000 seats is ~40 KB of JSON built from 1,000 structs).
    Bounded by entries and bytes; dropped wholesale when either bound is reached (a new version
    makes the old entries dead anyway)."""

    MAX_ENTRIES = 4096
    MAX_BYTES = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._bodies: dict[BodyKey, bytes] = {}
        self._bytes = 0

    def get(self, key: BodyKey) -> bytes | None:
        return self._bodies.get(key)

    def put(self, key: BodyKey, body: bytes) -> None:
        if len(self._bodies) >= self.MAX_ENTRIES or self._bytes + len(body) > self.MAX_BYTES:
            self._bodies.clear()
            self._bytes = 0
        self._bodies[key] = body
        self._bytes += len(body)


READ_BODIES = web.AppKey("kai_read_bodies", BodyCache)
SEATMAP_ENCODERS = web.AppKey("kai_seatmap_encoders", SeatMapEncoders)


def setup_reads(app: web.Application) -> None:
    """The per-app state of the reads: encoded bodies and seat-map encoders."""
    app[READ_BODIES] = BodyCache()
    app[SEATMAP_ENCODERS] = SeatMapEncoders()


def _remembered(request: web.Request, key: BodyKey, build: Callable[[], bytes]) -> web.Response:
    cache = request.app[READ_BODIES]
    body = cache.get(key)
    if body is None:
        body = build()
        cache.put(key, body)
    return raw_json_response(body)


async def get_availability(request: web.Request) -> web.Response:
    schedule_id, layout, snap, origin, destination, a, b = await journey_read(request)

    def build() -> bytes:
        classes = availability(layout, snap, a, b)
        view = AvailabilityView(schedule_id, origin, destination, snap.version, classes)
        return encode_json(view)

    key = ("availability", schedule_id, snap.layout_id, snap.version, a, b)
    return _remembered(request, key, build)


async def get_seatmap(request: web.Request) -> web.Response:
    schedule_id, layout, snap, origin, destination, a, b = await journey_read(request)
    encoder = request.app[SEATMAP_ENCODERS].of(layout)
    key = ("seatmap", schedule_id, snap.layout_id, snap.version, a, b)
    return _remembered(request, key, lambda: encoder.body(snap, origin, destination, a, b))


async def query_availability(request: web.Request) -> web.Response:
    """Many journeys at once: one layout and one snapshot per distinct schedule, in parallel.

    The engine's auto-pipeline sends the snapshots issued in one event-loop tick as one batch,
    so the whole request costs one Redis round trip per wave, not one per journey.
    """
    reader(request)
    c = ctx(request)
    body = await read_body(request, AvailabilityQuery)
    ids = list(dict.fromkeys(q.schedule_id for q in body.queries))
    found = await asyncio.gather(*(c.inventory.layout(i) for i in ids))
    layouts = dict(zip(ids, found, strict=True))
    missing = [i for i in ids if layouts[i] is None]
    if missing:
        reopened = await asyncio.gather(*(c.sales.ensure_schedule(i) for i in missing))
        layouts.update(zip(missing, reopened, strict=True))
    present = [i for i in ids if layouts[i] is not None]
    taken = await asyncio.gather(*(c.inventory.snapshot(i) for i in present))
    snaps = dict(zip(present, taken, strict=True))
    results: list[AvailabilityView | QueryItemError] = []
    for q in body.queries:
        layout = layouts[q.schedule_id]
        snap = snaps.get(q.schedule_id)
        if layout is None or snap is None:
            error = ItemError("schedule_not_found", f"no schedule {q.schedule_id!r}")
            results.append(QueryItemError(q.schedule_id, q.from_, q.to, error))
            continue
        legs = layout.leg_range(q.from_, q.to)
        if legs is None:
            detail = "; ".join(e.message for e in journey_problems(layout, q.from_, q.to))
            error = ItemError("invalid_request", detail)
            results.append(QueryItemError(q.schedule_id, q.from_, q.to, error))
            continue
        classes = availability(layout, snap, legs[0], legs[1])
        results.append(AvailabilityView(q.schedule_id, q.from_, q.to, snap.version, classes))
    return json_response(QueryResults(results))
