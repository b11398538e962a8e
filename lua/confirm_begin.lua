-- confirm_begin: held -> confirming, only while now < expires; the hold's deadline becomes
-- now + grace so that no reaper frees it while Postgres commits.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] taken: taken bitmap (sold or held)
-- KEYS[3] deadlines: zset hold id -> deadline ms
-- KEYS[4] hold: the hold's hash
-- KEYS[5] channel: the schedule's event channel
-- ARGV[1] hold_id
-- ARGV[2] user: the caller ('' = admin, no owner check)
-- ARGV[3] grace_ms
-- Returns: {code, hold_id, user, a, b, seats, status, expires_ms, created_ms, booking} with code
--   OK | HOLD_EXPIRED | HOLD_RELEASED | HOLD_CONFIRMED | SALE_CLOSED (a live hold on a schedule
--   cancelled since, or whose from stop has departed since it was retimed earlier: no booking
--   then; the hold stays until it expires);
--   or {HOLD_NOT_FOUND} | {SCHEDULE_NOT_FOUND}

-- @include lib/codes.lua
-- @include lib/common.lua

local m = redis.call('HMGET', KEYS[1], 'legs', 'toff', 'mdl', 'st', 'dep')
if not m[1] then return {SCHEDULE_NOT_FOUND} end
local now = ms_now(m[2])
local legs = tonumber(m[1])
reap(KEYS[1], KEYS[2], KEYS[3], legs, now)
flush(KEYS[1], KEYS[5])

local hid = ARGV[1]
local h = redis.call('HMGET', KEYS[4], 'st', 'user', 'exp', 'a')
if not h[1] or (ARGV[2] ~= '' and h[2] ~= ARGV[2]) then return {HOLD_NOT_FOUND} end
local a = tonumber(h[4])
local dep = a and list_at(m[5], a)  -- the departure of the hold's from stop
local code = OK
if h[1] == 'confirmed' then
  code = HOLD_CONFIRMED
elseif h[1] == 'released' then
  code = HOLD_RELEASED
elseif h[1] == 'expired' or now >= tonumber(h[3]) then
  code = HOLD_EXPIRED
elseif m[4] == 'cancelled' or (dep and now >= dep) then
  code = SALE_CLOSED
else
  local grace = tonumber(ARGV[3])
  if not grace or grace < 0 then return {INVALID_ARGUMENT} end
  redis.call('HSET', KEYS[4], 'st', 'confirming')
  redis.call('ZADD', KEYS[3], now + grace, hid)
  note_deadline(KEYS[1], tonumber(m[3]), now + grace)
end
local out = {code}
for _, v in ipairs(hold_fields(KEYS[4], hid)) do out[#out + 1] = v end
return out
