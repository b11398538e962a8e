-- confirm_abort: confirming -> held with its original deadline (expired at once if past it).
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] taken: taken bitmap (sold or held)
-- KEYS[3] deadlines: zset hold id -> deadline ms
-- KEYS[4] hold: the hold's hash
-- KEYS[5] due: global zset schedule id -> earliest deadline (not touched on Cluster)
-- KEYS[6] channel: the schedule's event channel
-- ARGV[1] hold_id
-- ARGV[2] schedule_id
-- Returns: {code, deadline ms (-1 unless the hold is held again)}, code OK | HOLD_EXPIRED
--   | HOLD_RELEASED | HOLD_CONFIRMED | HOLD_NOT_FOUND | SCHEDULE_NOT_FOUND

-- @include lib/codes.lua
-- @include lib/common.lua

local m = redis.call('HMGET', KEYS[1], 'legs', 'toff', 'mdl')
if not m[1] then return {SCHEDULE_NOT_FOUND} end
local now = ms_now(m[2])
local legs = tonumber(m[1])
reap(KEYS[1], KEYS[2], KEYS[3], legs, now)

local hid = ARGV[1]
local h = hold_state(KEYS[4], 'exp')
local code = OK
local deadline = -1
if not h[1] then
  code = HOLD_NOT_FOUND
elseif h[1] == 'confirmed' then
  code = HOLD_CONFIRMED
elseif h[1] == 'released' then
  code = HOLD_RELEASED
elseif h[1] == 'expired' then
  code = HOLD_EXPIRED
elseif h[1] == 'confirming' then
  local exp = tonumber(h[7])
  if now >= exp then
    end_hold(KEYS[1], KEYS[2], KEYS[3], legs, KEYS[4], hid, h, 'expired')
    code = HOLD_EXPIRED
  else
    redis.call('HSET', KEYS[4], 'st', 'held')
    redis.call('ZADD', KEYS[3], exp, hid)
    note_deadline(KEYS[1], tonumber(m[3]), exp)
    if not CLUSTER then redis.call('ZADD', KEYS[5], 'LT', exp, ARGV[2]) end
    deadline = exp
  end
end
flush(KEYS[1], KEYS[6])
return {code, deadline}
