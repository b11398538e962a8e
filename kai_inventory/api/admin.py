"""Catalogue (scope ``inventory:admin``): create or replace a schedule; change its status."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from kai_inventory.api.common import admin, ctx, json_response, read_body
from kai_inventory.api.errors import ApiError, invalid, invalid_many
from kai_inventory.api.reads import schedule_not_found, valid_schedule_id
from kai_inventory.api.schemas import ScheduleId, StatusChange, StatusView
from kai_inventory.domain import ScheduleDef, validate_schedule
from kai_inventory.sales import PutOutcome

_RESULTS: dict[PutOutcome, tuple[int, str]] = {
    PutOutcome.CREATED: (201, "created"),
    PutOutcome.REPLACED: (200, "replaced"),
    PutOutcome.UNCHANGED: (200, "unchanged"),
}


class ScheduleWritten(msgspec.Struct, frozen=True):
    """Answer of ``PUT /v1/admin/schedules/{id}``; the schedule itself is at ``Location``."""

    schedule_id: ScheduleId
    result: Literal["created", "replaced", "unchanged"]


async def put_schedule(request: web.Request) -> web.Response:
    admin(request)
    schedule_id = request.match_info["schedule_id"]
    if not valid_schedule_id(schedule_id):
        raise invalid("schedule_id", "must be 1..64 characters of [A-Za-z0-9_-]")
    definition = await read_body(request, ScheduleDef)
    errors = validate_schedule(definition)
    if errors:
        raise invalid_many(errors)
    outcome = await ctx(request).sales.put_schedule(schedule_id, definition)
    if outcome == PutOutcome.IN_USE:
        raise ApiError(
            "schedule_in_use",
            "the stops or seats would change under live holds or sales",
        )
    status, result = _RESULTS[outcome]
    return json_response(
        ScheduleWritten(schedule_id, result),  # type: ignore[arg-type]
        status=status,
        headers={"Location": f"/v1/schedules/{schedule_id}"},
    )


async def set_status(request: web.Request) -> web.Response:
    admin(request)
    schedule_id = request.match_info["schedule_id"]
    if not valid_schedule_id(schedule_id):
        raise schedule_not_found(schedule_id)
    change = await read_body(request, StatusChange)
    delay = change.delay_minutes
    found = await ctx(request).sales.set_status(schedule_id, change.status, delay, change.reason)
    if not found:
        raise schedule_not_found(schedule_id)
    return json_response(StatusView(schedule_id, change.status, delay, change.reason))
