-- snapshot: version-conditional read. Expired holds are reaped first (only when one is due),
-- so a read never shows a hold past its deadline.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] sold: sold bitmap
-- KEYS[3] taken: taken bitmap (sold or held)
-- KEYS[4] deadlines: zset hold id -> deadline ms
-- KEYS[5] channel: the schedule's event channel
-- ARGV[1] cached_version: the caller's version (-1: none)
-- Returns: {OK, version, status, delay, reason, lid, sold|nil, taken|nil} (bitmaps only when
--   version differs from cached_version) | {SCHEDULE_NOT_FOUND}

-- @include lib/codes.lua
-- @include lib/common.lua

local m = redis.call('HMGET', KEYS[1], 'legs', 'toff')
if not m[1] then return {SCHEDULE_NOT_FOUND} end
local now = ms_now(m[2])
if #redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1) > 0 then
  reap(KEYS[1], KEYS[3], KEYS[4], tonumber(m[1]), now)
  flush(KEYS[1], KEYS[5])
end
local s = redis.call('HMGET', KEYS[1], 'ver', 'st', 'delay', 'reason', 'lid')
if s[1] == ARGV[1] then
  return {OK, s[1], s[2], s[3], s[4], s[5], false, false}
end
return {OK, s[1], s[2], s[3], s[4], s[5], redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
