-- Join a sale's queue: one place per user (joining again returns the same place).
-- Before opens_at the place's score is the random draw ARGV[2] in [0, 1) (the opening shuffle,
-- drawn by the server at join); from opens_at it is 1 + the join counter (first come first served).
-- KEYS[1] cfg
-- KEYS[2] queue
-- KEYS[3] places
-- KEYS[4] adm
-- KEYS[5] adm_exp
-- KEYS[6] adm_idle
-- ARGV[1] user
-- ARGV[2] random score in [0, 1), used only before opens_at
-- Returns the q_state reply (lib/queue.lua) | {Q_SALE_NOT_FOUND} | {Q_SALE_NOT_OPEN} (closed)
-- @include lib/queue.lua

local cfg = q_cfg()
if not cfg then
  return {Q_SALE_NOT_FOUND}
end
local now = q_now_ms()
if now >= cfg.closes then
  return {Q_SALE_NOT_OPEN}
end
local user = ARGV[1]
q_admission(user, now) -- a lapsed admission gives the place up first
local created = 0
if not redis.call('HGET', K_PLACES, user) then
  local n = redis.call('HINCRBY', K_CFG, 'joins', 1)
  local score
  if now < cfg.opens then
    score = ARGV[2]
  else
    score = 1 + n
  end
  redis.call('HSET', K_PLACES, user, n .. ':' .. now)
  redis.call('ZADD', K_QUEUE, score, user)
  created = 1
end
return q_state(cfg, user, now, created)
