-- Create or update a sale's settings. The token bucket starts empty at opens_at.
-- KEYS[1] cfg: hash of the sale's settings and counters
-- KEYS[2] queue
-- KEYS[3] places
-- KEYS[4] adm
-- KEYS[5] adm_exp
-- KEYS[6] adm_idle
-- ARGV[1] opens_at, epoch ms
-- ARGV[2] closes_at, epoch ms
-- ARGV[3] admit_per_s
-- ARGV[4] max_admitted
-- ARGV[5] idle ms
-- ARGV[6] admission ttl ms
-- ARGV[7] schedule ids, comma separated
-- Returns {Q_OK, created 0|1, changed 0|1} | {Q_INVALID_ARGUMENT} (opens_at moved after the opening)
-- @include lib/queue.lua

local now = q_now_ms()
local opens = tonumber(ARGV[1])
local names = {'opens', 'closes', 'rate', 'max', 'idle', 'ttl', 'sch'}
local cur = redis.call('HMGET', K_CFG, unpack(names))
local keep = 86400000 + tonumber(ARGV[6])

if not cur[1] then
  redis.call('HSET', K_CFG, 'opens', ARGV[1], 'closes', ARGV[2], 'rate', ARGV[3], 'max', ARGV[4],
    'idle', ARGV[5], 'ttl', ARGV[6], 'sch', ARGV[7], 'tok', 0, 'tts', ARGV[1], 'popped', 0,
    'joins', 0, 'serial', 0, 'created', now)
  redis.call('PEXPIREAT', K_CFG, tonumber(ARGV[2]) + keep)
  return {Q_OK, 1, 1}
end

local same = true
for i = 1, #names do
  if cur[i] ~= ARGV[i] then
    same = false
  end
end
if same then
  return {Q_OK, 0, 0}
end
local old_opens = tonumber(cur[1])
if old_opens ~= opens and old_opens <= now then
  return {Q_INVALID_ARGUMENT}
end
redis.call('HSET', K_CFG, 'opens', ARGV[1], 'closes', ARGV[2], 'rate', ARGV[3], 'max', ARGV[4],
  'idle', ARGV[5], 'ttl', ARGV[6], 'sch', ARGV[7])
if old_opens > now then
  redis.call('HSET', K_CFG, 'tok', 0, 'tts', ARGV[1])
end
for _, key in ipairs(KEYS) do
  redis.call('PEXPIREAT', key, tonumber(ARGV[2]) + keep)
end
return {Q_OK, 0, 1}
