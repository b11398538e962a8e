-- release: held/confirming -> released (idempotent: released or expired again is OK).
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] taken: taken bitmap (sold or held)
-- KEYS[3] deadlines: zset hold id -> deadline ms
-- KEYS[4] hold: the hold's hash
-- KEYS[5] channel: the schedule's event channel
-- ARGV[1] hold_id
-- ARGV[2] user: the caller ('' = admin, no owner check)
-- Returns: {OK | HOLD_CONFIRMED, hold_id, user, a, b, seats, status, expires_ms, created_ms,
--   booking} | {HOLD_NOT_FOUND} (also for another user's hold) | {SCHEDULE_NOT_FOUND}

-- @include lib/codes.lua
-- @include lib/common.lua

local m = redis.call('HMGET', KEYS[1], 'legs', 'toff')
if not m[1] then return {SCHEDULE_NOT_FOUND} end
local now = ms_now(m[2])
local legs = tonumber(m[1])
reap(KEYS[1], KEYS[2], KEYS[3], legs, now)

local hid = ARGV[1]
local h = hold_state(KEYS[4])
local code = OK
if not h[1] or (ARGV[2] ~= '' and h[5] ~= ARGV[2]) then
  code = HOLD_NOT_FOUND
elseif h[1] == 'confirmed' then
  code = HOLD_CONFIRMED
elseif h[1] == 'held' or h[1] == 'confirming' then
  end_hold(KEYS[1], KEYS[2], KEYS[3], legs, KEYS[4], hid, h, 'released')
end
flush(KEYS[1], KEYS[5])
if code == HOLD_NOT_FOUND then return {code} end
local out = {code}
for _, v in ipairs(hold_fields(KEYS[4], hid)) do out[#out + 1] = v end
return out
