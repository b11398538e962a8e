"""Failure reasons returned by the Lua scripts: small negative integers, mirrored here.

A script's first reply element is one of these; the Python side never parses error strings.
Keep in sync with ``lua/lib/codes.lua`` (a test checks both lists agree).
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    OK = 0
    SCHEDULE_NOT_FOUND = -1
    LAYOUT_MISMATCH = -2
    SALE_CLOSED = -3
    SEATS_UNAVAILABLE = -4
    INSUFFICIENT_INVENTORY = -5
    HOLD_LIMIT = -6
    RATE_LIMITED = -7
    HOLD_NOT_FOUND = -8
    HOLD_EXPIRED = -9
    HOLD_RELEASED = -10
    HOLD_CONFIRMED = -11
    IDEMPOTENCY_CONFLICT = -12
    SCHEDULE_IN_USE = -13
    INVALID_ARGUMENT = -14
    NOT_SOLD = -15


_BY_VALUE = {int(code): code for code in Code}


def code_of(value: int) -> Code:
    """``Code(value)`` as a dict lookup: every script reply starts with one, and the enum's own
    lookup costs ~10x more on the hold and read paths."""
    try:
        return _BY_VALUE[value]
    except KeyError:
        raise ValueError(f"{value!r} is not a valid Code") from None
