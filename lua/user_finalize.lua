-- user_finalize: Redis Cluster only. After the schedule's hold script: a hold that was made
-- replaces its reservation by its expiry; otherwise the reservation is dropped, and so is the
-- idempotency pointer if it still names this hold.
-- @function
-- KEYS[1] user_holds: the user's zset hold id -> expires ms
-- KEYS[2] user_idem: the idempotency pointer (ARGV[4] == '1')
-- ARGV[1] hold_id
-- ARGV[2] outcome: 'held' (the hold was made) or 'none'
-- ARGV[3] expires_ms: the hold's expiry (outcome 'held')
-- ARGV[4] idem: '1' when an idempotency key was given
-- ARGV[5] body_hash
-- ARGV[6] track: '1' when the live-hold limit is on (the zset is kept)
-- Returns: {OK}

-- @include lib/codes.lua

local hid = ARGV[1]
if ARGV[2] == 'held' then
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[1], ARGV[3], hid)
    redis.call('PEXPIRE', KEYS[1], 172800000)
  end
  return {OK}
end
redis.call('ZREM', KEYS[1], hid)
if ARGV[4] == '1' and redis.call('GET', KEYS[2]) == ARGV[5] .. '\n' .. hid then
  redis.call('DEL', KEYS[2])
end
return {OK}
