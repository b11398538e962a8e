-- confirm: held/confirming -> confirmed; its seat-legs become sold (idempotent). They stay
-- taken. If the hold was reaped or released meanwhile (Postgres already committed: the
-- reconcile path), the seat-legs are still marked sold and taken, and any other live hold on
-- them is revoked.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] sold: sold bitmap
-- KEYS[3] taken: taken bitmap (sold or held)
-- KEYS[4] deadlines: zset hold id -> deadline ms
-- KEYS[5] hold: the hold's hash
-- KEYS[6] channel: the schedule's event channel
-- ARGV[1] hold_id
-- ARGV[2] booking_number
-- Returns: {OK, revoked} | {HOLD_NOT_FOUND} | {SCHEDULE_NOT_FOUND}

-- @include lib/codes.lua
-- @include lib/common.lua

local m = redis.call('HMGET', KEYS[1], 'legs', 'toff')
if not m[1] then return {SCHEDULE_NOT_FOUND} end
local now = ms_now(m[2])
local legs = tonumber(m[1])
reap(KEYS[1], KEYS[3], KEYS[4], legs, now)

local hid = ARGV[1]
local h = hold_state(KEYS[5])
if not h[1] then
  flush(KEYS[1], KEYS[6])
  return {HOLD_NOT_FOUND}
end
if h[1] == 'confirmed' then
  flush(KEYS[1], KEYS[6])
  return {OK, 0}
end
local mine = seat_legs(h)
local a, b, seats = mine[1], mine[2], mine[3]
local mine_legs = {mine}
local revoked = 0
local taken_too = nil  -- a live hold's seat-legs are taken already
if h[1] == 'held' or h[1] == 'confirming' then
  redis.call('ZREM', KEYS[4], hid)
  untrack(KEYS[1], h, hid)
else
  taken_too = KEYS[3]
  local mine_seats = {}
  for _, i in ipairs(seats) do mine_seats[i] = true end
  local others = live_holds_split(KEYS[1], KEYS[4], function(k, i)
    return k >= a and k < b and mine_seats[i]
  end)
  for _, o in ipairs(others) do
    end_hold(KEYS[1], KEYS[3], KEYS[4], legs, o[1], o[2], o[3], 'released')
    revoked = revoked + 1
  end
end
bits_write(KEYS[2], mine_legs, legs, 1, taken_too)
redis.call('HSET', KEYS[5], 'st', 'confirmed', 'bk', ARGV[2])
note(a, b, seats)
flush(KEYS[1], KEYS[6])
return {OK, revoked}
