-- The admission tick, safe to run from every process at once: returns lapsed admissions (past
-- admission ttl or idle), then admits from the head of the queue at `rate` per second in total,
-- never more than `max` admitted at once. The rate is a token bucket kept in cfg in
-- milli-tokens (integers: exact), filled from Redis TIME since opens_at, capped at one second.
-- KEYS[1] cfg
-- KEYS[2] queue
-- KEYS[3] places
-- KEYS[4] adm
-- KEYS[5] adm_exp
-- KEYS[6] adm_idle
-- ARGV[1] most users admitted (and most returned) by this call
-- Returns {Q_OK, admitted, returned, waiting, admitted_now, now, popped, user1, wait_ms1, ...}
--   (the users admitted by this call, in admission order, each with the ms it waited)
--   | {Q_SALE_NOT_FOUND}
-- @include lib/queue.lua

local cfg = q_cfg()
if not cfg then
  return {Q_SALE_NOT_FOUND}
end
local now = q_now_ms()
local limit = tonumber(ARGV[1])

local returned = 0
for _, key in ipairs({K_EXP, K_IDLE}) do
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, limit)
  for _, user in ipairs(due) do
    q_drop(user)
    returned = returned + 1
  end
end

local out = {}
local n = 0
if now >= cfg.opens and now < cfg.closes then
  local tts = math.max(cfg.tts, cfg.opens)
  local tok = cfg.tok
  if now > tts then
    tok = math.min(cfg.rate * 1000, tok + (now - tts) * cfg.rate)
    tts = now
  end
  local free = cfg.max - redis.call('ZCARD', K_EXP)
  local take = math.min(math.floor(tok / 1000), free, limit)
  if take > 0 then
    local popped = redis.call('ZPOPMIN', K_QUEUE, take)
    local exp = now + cfg.ttl
    for i = 1, #popped, 2 do
      local user = popped[i]
      local serial = redis.call('HINCRBY', K_CFG, 'serial', 1)
      local _, joined = q_place(user)
      redis.call('HSET', K_ADM, user, serial .. ':' .. now .. ':' .. exp)
      redis.call('ZADD', K_EXP, exp, user)
      redis.call('ZADD', K_IDLE, now + cfg.idle, user)
      n = n + 1
      out[#out + 1] = user
      out[#out + 1] = now - (joined or now)
    end
    tok = tok - n * 1000
    cfg.popped = redis.call('HINCRBY', K_CFG, 'popped', n)
  end
  redis.call('HSET', K_CFG, 'tok', tok, 'tts', tts)
end

local keep = cfg.closes + cfg.ttl + 86400000
for _, key in ipairs(KEYS) do
  redis.call('PEXPIREAT', key, keep)
end
local reply = {Q_OK, n, returned, redis.call('ZCARD', K_QUEUE), redis.call('ZCARD', K_EXP), now, cfg.popped}
for _, v in ipairs(out) do
  reply[#reply + 1] = v
end
return reply
