-- hold_class: choose and hold `count` seats of one class for legs [a, b); all or nothing.
-- The choice (best fit by default, first fit on request) is lib/choice.lua's.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] taken: taken bitmap (sold or held)
-- KEYS[3] deadlines: zset hold id -> deadline ms
-- KEYS[4] hold: the new hold's hash (prefix .. hold id)
-- KEYS[5] user_holds: the user's live holds zset (hold id -> expires ms)
-- KEYS[6] user_rate: the user's one-minute attempt counter
-- KEYS[7] user_idem: the idempotency record (used only when ARGV[10] == '1')
-- KEYS[8] due: global zset schedule id -> earliest deadline (for the reaper)
-- KEYS[9] channel: the schedule's event channel
-- ARGV[1] lid: layout id the class span refers to
-- ARGV[2] hold_id
-- ARGV[3] user
-- ARGV[4] schedule_id
-- ARGV[5] a: first leg
-- ARGV[6] b: end leg (exclusive)
-- ARGV[7] ttl_ms
-- ARGV[8] max_active: live-hold limit per user (0 = off)
-- ARGV[9] rate_per_min: attempts per user per minute (0 = off)
-- ARGV[10] idem: '1' when an idempotency key is given
-- ARGV[11] body_hash: the request's hash for the idempotency record
-- ARGV[12] class_start: first seat index of the class
-- ARGV[13] class_end: end seat index of the class (exclusive; equal to start: no such class)
-- ARGV[14] cars: comma list "start:end" of the class's car spans
-- ARGV[15] count
-- ARGV[16] strategy: 'best' or 'first'
-- Returns: {OK, 0, seats, expires_ms, created_ms} (made now: held, no booking)
--   | {OK, replayed, hold_id, user, a, b, seats, status, expires_ms, created_ms, booking}
--     (an idempotent replay, or on Cluster this very hold found again)
--   | {INSUFFICIENT_INVENTORY, available} | {RATE_LIMITED, retry_after_ms}
--   | {IDEMPOTENCY_CONFLICT | SCHEDULE_NOT_FOUND | LAYOUT_MISMATCH | INVALID_ARGUMENT
--      | SALE_CLOSED | HOLD_LIMIT}

-- @include lib/codes.lua
-- @include lib/common.lua
-- @include lib/hold.lua
-- @include lib/choice.lua

local early, ctx = hold_begin()
if early then return early end

local cs, ce, c = int_of(ARGV[12]), int_of(ARGV[13]), int_of(ARGV[15])
if not cs or not ce or not c or c < 1 or cs < 0 or ce > ctx.n or cs > ce then
  return hold_done({INVALID_ARGUMENT})
end
if cs == ce then return hold_done({INSUFFICIENT_INVENTORY, 0}) end
local cars = class_cars(ARGV[14], cs, ce)  -- they must tile the class; else the class is one span
local seats, span, span_g0 = choose_seats(KEYS[2], ctx, cars, cs, ce, c, ARGV[16] ~= 'first')
if not seats then return hold_done({INSUFFICIENT_INVENTORY, span}) end
return hold_commit(ctx, seats, span, span_g0 * ctx.legs)
