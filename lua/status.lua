-- status: set the schedule's status (scheduled/delayed/cancelled), delay and reason; publish.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] taken: taken bitmap (sold or held)
-- KEYS[3] deadlines: zset hold id -> deadline ms
-- KEYS[4] channel: the schedule's event channel
-- ARGV[1] status
-- ARGV[2] delay_minutes
-- ARGV[3] reason
-- Returns: {OK, changed (0/1)} | {SCHEDULE_NOT_FOUND} | {INVALID_ARGUMENT}

-- @include lib/codes.lua
-- @include lib/common.lua

local m = redis.call('HMGET', KEYS[1], 'legs', 'toff', 'st', 'delay', 'reason')
if not m[1] then return {SCHEDULE_NOT_FOUND} end
local st, delay, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if (st ~= 'scheduled' and st ~= 'delayed' and st ~= 'cancelled') or not delay or delay < 0 then
  return {INVALID_ARGUMENT}
end
local now = ms_now(m[2])
reap(KEYS[1], KEYS[2], KEYS[3], tonumber(m[1]), now)
flush(KEYS[1], KEYS[4])
if m[3] == st and tonumber(m[4]) == delay and m[5] == reason then return {OK, 0} end
redis.call('HSET', KEYS[1], 'st', st, 'delay', delay, 'reason', reason)
local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call(PUB, KEYS[4], cjson.encode({v = v, st = st, delay = delay, reason = reason}))
return {OK, 1}
