-- The hold path's admission check: the user holds this sale's live admission number `serial`
-- (a token from an earlier, returned admission fails). Counts as activity (idle deadline moves).
-- KEYS[1] cfg
-- KEYS[2] queue
-- KEYS[3] places
-- KEYS[4] adm
-- KEYS[5] adm_exp
-- KEYS[6] adm_idle
-- ARGV[1] user
-- ARGV[2] admission serial (from the signed token)
-- Returns {Q_OK, expires_ms} | {Q_SALE_NOT_FOUND} | {Q_NOT_ADMITTED} | {Q_ADMISSION_EXPIRED}
-- @include lib/queue.lua

local cfg = q_cfg()
if not cfg then
  return {Q_SALE_NOT_FOUND}
end
local now = q_now_ms()
local user = ARGV[1]
local raw = redis.call('HGET', K_ADM, user)
if not raw then
  return {Q_NOT_ADMITTED}
end
local serial = q_split3(raw)
if tostring(serial) ~= ARGV[2] then
  return {Q_NOT_ADMITTED}
end
local live, exp, lapsed = q_admission(user, now)
if not live then
  return {Q_ADMISSION_EXPIRED}
end
redis.call('ZADD', K_IDLE, 'XX', now + cfg.idle, user)
return {Q_OK, exp}
