"""Bookings: read one, cancel one (owner or admin; anyone else gets 404)."""

from __future__ import annotations

import re

from aiohttp import web

from kai_inventory.api.common import ctx, holder, json_response
from kai_inventory.api.errors import ApiError
from kai_inventory.api.holds import booking_view
from kai_inventory.engine.codes import Code

_BOOKING_NUMBER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def booking_not_found() -> ApiError:
    return ApiError("booking_not_found", "no such booking")


def _booking_number(request: web.Request) -> str:
    number = request.match_info["booking_number"]
    if _BOOKING_NUMBER.match(number) is None:
        raise booking_not_found()
    return number


async def get_booking(request: web.Request) -> web.Response:
    principal = holder(request)
    number = _booking_number(request)
    booking = await ctx(request).sales.get_booking(number, principal.owner)
    if booking is None:
        raise booking_not_found()
    return json_response(booking_view(booking))


async def cancel_booking(request: web.Request) -> web.Response:
    principal = holder(request)
    number = _booking_number(request)
    outcome = await ctx(request).sales.cancel(number, principal.owner)
    if outcome.code == Code.HOLD_NOT_FOUND or outcome.booking is None:
        raise booking_not_found()
    if outcome.code == Code.SALE_CLOSED:
        raise ApiError("sale_closed", "this journey has departed; the booking cannot be cancelled")
    if outcome.code != Code.OK:
        raise RuntimeError(f"unexpected cancel result {outcome.code!r}")
    return json_response(booking_view(outcome.booking, outcome.refund))
