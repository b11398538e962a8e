-- hold_seats: hold the given seats for legs [a, b); all or nothing.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] sold: sold bitmap
-- KEYS[3] held: held bitmap
-- KEYS[4] deadlines: zset hold id -> deadline ms
-- KEYS[5] hold: the new hold's hash (prefix .. hold id)
-- KEYS[6] user_holds: the user's live holds zset (hold id -> expires ms)
-- KEYS[7] user_rate: the user's one-minute attempt counter
-- KEYS[8] user_idem: the idempotency record (used only when ARGV[10] == '1')
-- KEYS[9] due: global zset schedule id -> earliest deadline (for the reaper)
-- KEYS[10] channel: the schedule's event channel
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
-- Returns: {OK, replayed, hold_id, user, a, b, seats, status, expires_ms, created_ms, booking}
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
local seen = {}
for _, i in ipairs(seats) do
  if not i or i < 0 or i >= ctx.n or i ~= math.floor(i) or seen[i] then
    return hold_done({INVALID_ARGUMENT})
  end
  seen[i] = true
end

local rb, a, b = ctx.rb, ctx.a, ctx.b
local nrow = b - a
local sold = redis.call('GETRANGE', KEYS[2], a * rb, b * rb - 1)
local held = redis.call('GETRANGE', KEYS[3], a * rb, b * rb - 1)
local want = nrow * rb
if #sold < want then sold = sold .. string.rep('\0', want - #sold) end
if #held < want then held = held .. string.rep('\0', want - #held) end
-- the asked seats' bytes lo..hi of a row, with their masks
local band, bor, rshift, byte, char, sub = bit.band, bit.bor, bit.rshift, string.byte,
  string.char, string.sub
local masks, lo, hi = {}, nil, nil
for _, i in ipairs(seats) do
  local j = (i - i % 8) / 8
  masks[j] = bor(masks[j] or 0, rshift(128, i % 8))
  if not lo or j < lo then lo = j end
  if not hi or j > hi then hi = j end
end
local w = hi - lo + 1
-- One pass over the legs: the asked bytes of both bitmaps give the taken bits (tk) and the new
-- held bytes; the held span from byte lo of row a to byte hi of row b-1 is rebuilt alongside
-- (unchanged bytes as substrings) and written with one SETRANGE when every seat-leg is free.
local parts, np = {}, 0
local tk, any = {}, 0
if w == 1 then
  local m, t = masks[lo], 0
  for p = lo + 1, (nrow - 1) * rb + lo + 1, rb do
    local h = byte(held, p)
    t = bor(t, band(bor(byte(sold, p), h), m))
    parts[np + 1], parts[np + 2] = char(bor(h, m)), sub(held, p + 1, p + rb - 1)
    np = np + 2
  end
  tk[1], any = t, t
else
  local mk, cur = {}, {}
  for q = 1, w do
    mk[q] = masks[lo + q - 1] or 0
    tk[q] = 0
  end
  for p = lo + 1, (nrow - 1) * rb + lo + 1, rb do
    local sv, hv = {byte(sold, p, p + w - 1)}, {byte(held, p, p + w - 1)}
    for q = 1, w do
      local h, m = hv[q], mk[q]
      tk[q] = bor(tk[q], band(bor(sv[q], h), m))
      cur[q] = bor(h, m)
    end
    parts[np + 1], parts[np + 2] = char(unpack(cur, 1, w)), sub(held, p + w, p + rb - 1)
    np = np + 2
  end
  for q = 1, w do any = bor(any, tk[q]) end
end
if any ~= 0 then
  local bad = {}
  for _, i in ipairs(seats) do
    local t = tk[(i - i % 8) / 8 - lo + 1]
    if band(t, rshift(128, i % 8)) ~= 0 then bad[#bad + 1] = i end
  end
  return hold_done({SEATS_UNAVAILABLE, bad})
end
parts[np] = nil  -- the last row ends at byte hi
redis.call('SETRANGE', KEYS[3], a * rb + lo, table.concat(parts))
return hold_commit(ctx, seats)
