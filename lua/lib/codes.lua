-- Failure codes, mirrored by kai_inventory/engine/codes.py (a test checks both agree).
local OK = 0
local SCHEDULE_NOT_FOUND = -1
local LAYOUT_MISMATCH = -2
local SALE_CLOSED = -3
local SEATS_UNAVAILABLE = -4
local INSUFFICIENT_INVENTORY = -5
local HOLD_LIMIT = -6
local RATE_LIMITED = -7
local HOLD_NOT_FOUND = -8
local HOLD_EXPIRED = -9
local HOLD_RELEASED = -10
local HOLD_CONFIRMED = -11
local IDEMPOTENCY_CONFLICT = -12
local SCHEDULE_IN_USE = -13
local INVALID_ARGUMENT = -14
local NOT_SOLD = -15
