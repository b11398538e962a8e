-- reap: expire the schedule's holds whose deadline passed; refresh its entry in the due zset
-- (single Redis; on Cluster the caller does it from the returned next deadline).
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] taken: taken bitmap (sold or held)
-- KEYS[3] deadlines: zset hold id -> deadline ms
-- KEYS[4] due: global zset schedule id -> earliest deadline (not touched on Cluster)
-- KEYS[5] channel: the schedule's event channel
-- ARGV[1] schedule_id
-- ARGV[2] limit: most holds to expire in this call (0 = all)
-- Returns: {OK, expired holds, more (1 if expired holds remain), next deadline ms or -1}

-- @include lib/codes.lua
-- @include lib/common.lua

local m = redis.call('HMGET', KEYS[1], 'legs', 'toff')
if not m[1] then
  if not CLUSTER then redis.call('ZREM', KEYS[4], ARGV[1]) end
  return {OK, 0, 0, -1}
end
local now = ms_now(m[2])
local legs = tonumber(m[1])
local limit = tonumber(ARGV[2]) or 0
if limit <= 0 then limit = nil end
local expired = reap(KEYS[1], KEYS[2], KEYS[3], legs, now, limit)
flush(KEYS[1], KEYS[5])
local earliest, earliest_text = reset_deadline_hint(KEYS[1], KEYS[3])
if not earliest then
  if not CLUSTER then redis.call('ZREM', KEYS[4], ARGV[1]) end
  return {OK, expired, 0, -1}
end
if not CLUSTER then redis.call('ZADD', KEYS[4], earliest_text, ARGV[1]) end
local more = 0
if earliest <= now then more = 1 end
return {OK, expired, more, earliest}
