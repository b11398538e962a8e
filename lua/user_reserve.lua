-- user_reserve: Redis Cluster only. The user's half of a hold, run just before the schedule's
-- hold script (which cannot touch the user's slot): idempotency pointer, rate limit and a
-- reservation of one live-hold place. The reservation counts like a live hold until
-- user_finalize turns it into the hold's expiry or drops it; if the caller dies in between it
-- ends by itself after reservation_ms, so a crash cannot leak a place.
-- @function
-- KEYS[1] user_holds: the user's zset hold id -> expires ms (live holds and reservations)
-- KEYS[2] user_rate: the user's one-minute attempt counter
-- KEYS[3] user_idem: pointer "body_hash \n hold_id" for the idempotency key (ARGV[3] == '1')
-- ARGV[1] toff: clock offset in ms (the schedule's test clock; 0 in production)
-- ARGV[2] hold_id: the id the new hold will get
-- ARGV[3] idem: '1' when an idempotency key is given
-- ARGV[4] body_hash
-- ARGV[5] rate_per_min: attempts per user per minute (0 = off)
-- ARGV[6] max_active: live-hold limit per user (0 = off)
-- ARGV[7] reservation_ms: lifetime of the reservation
-- Returns: {OK, hold_id to use, at_limit (0/1), replay (0/1), {live hold ids, when at_limit}}
--   | {IDEMPOTENCY_CONFLICT} | {RATE_LIMITED, retry_after_ms}
--   replay = 1: the key was used before with this body; hold_id is that request's hold id (the
--   schedule's script replays it, or makes it if that request never got so far).

-- @include lib/codes.lua
-- @include lib/common.lua

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + (tonumber(ARGV[1]) or 0)
local hid = ARGV[2]
if ARGV[3] == '1' then
  local rec = redis.call('GET', KEYS[3])
  if rec then
    local sep = string.find(rec, '\n', 1, true)
    if sep then
      if string.sub(rec, 1, sep - 1) ~= ARGV[4] then return {IDEMPOTENCY_CONFLICT} end
      return {OK, string.sub(rec, sep + 1), 0, 1, {}}
    end
  end
end
local rate = tonumber(ARGV[5]) or 0
if rate > 0 then
  local wait = over_rate(KEYS[2], rate)
  if wait then return {RATE_LIMITED, wait} end
end
local max_active = tonumber(ARGV[6]) or 0
if max_active > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
  if not redis.call('ZSCORE', KEYS[1], hid) then
    local live = redis.call('ZRANGE', KEYS[1], 0, -1)
    if #live >= max_active then return {OK, hid, 1, 0, live} end
    redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[7])), hid)
    redis.call('PEXPIRE', KEYS[1], 172800000)
  end
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[3], ARGV[4] .. '\n' .. hid, 'PX', 86400000)
end
return {OK, hid, 0, 0, {}}
