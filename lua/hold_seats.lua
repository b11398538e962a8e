-- hold_seats: hold the given seats for legs [a, b); all or nothing.
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
-- ARGV[1] lid: layout id the caller's indices refer to
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
-- ARGV[12] seats: comma list of seat indices
-- Returns: {OK, 0, seats, expires_ms, created_ms} (made now: held, no booking)
--   | {OK, replayed, hold_id, user, a, b, seats, status, expires_ms, created_ms, booking}
--     (an idempotent replay, or on Cluster this very hold found again)
--   | {SEATS_UNAVAILABLE, {seat indices}} | {RATE_LIMITED, retry_after_ms}
--   | {IDEMPOTENCY_CONFLICT | SCHEDULE_NOT_FOUND | LAYOUT_MISMATCH | INVALID_ARGUMENT
--      | SALE_CLOSED | HOLD_LIMIT}

-- @include lib/codes.lua
-- @include lib/common.lua
-- @include lib/hold.lua

local early, ctx = hold_begin()
if early then return early end

local seats = split_ints(ARGV[12])
if #seats == 0 then return hold_done({INVALID_ARGUMENT}) end
local masks, lo, hi = group_masks(seats, ctx.n)
if not masks then return hold_done({INVALID_ARGUMENT}) end  -- off the train, or given twice
local band, bor, byte, rshift = bit.band, bit.bor, string.byte, bit.rshift

-- The span from leg a of the lowest asked group to leg b-1 of the highest: one short GETRANGE
-- of the taken bitmap (one group's legs are adjacent), the journey's bytes of group j at
-- (j - lo)*legs.
local legs, a, b = ctx.legs, ctx.a, ctx.b
local nrow = b - a
local first, last = lo * legs + a, hi * legs + b - 1
local want = last - first + 1
local taken = zero_padded(redis.call('GETRANGE', KEYS[2], int_text(first), int_text(last)), want)
local any = 0
for j, m in pairs(masks) do
  local p = (j - lo) * legs + 1
  any = bor(any, band(bor(byte(taken, p, p + nrow - 1)), m))
end
if any ~= 0 then  -- refused: which seats are taken
  local bad = {}
  for _, i in ipairs(seats) do
    local p = ((i - i % 8) / 8 - lo) * legs + 1
    if band(bor(byte(taken, p, p + nrow - 1)), rshift(128, i % 8)) ~= 0 then bad[#bad + 1] = i end
  end
  return hold_done({SEATS_UNAVAILABLE, bad})
end
return hold_commit(ctx, seats, taken, first, masks, lo, hi)
