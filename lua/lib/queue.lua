-- Helpers shared by the waiting-room scripts (sale_put, queue_*, admission_check).
-- Per-sale scripts take the same six keys, in this order (kai_inventory/engine/keys.py SaleKeys):
--   KEYS[1] cfg, KEYS[2] queue, KEYS[3] places, KEYS[4] adm, KEYS[5] adm_exp, KEYS[6] adm_idle
-- @include lib/queue_codes.lua

local K_CFG, K_QUEUE, K_PLACES, K_ADM, K_EXP, K_IDLE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

-- Redis server time in ms: every deadline and the token bucket use this clock only.
local function q_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local Q_FIELDS = {'opens', 'closes', 'rate', 'max', 'idle', 'ttl', 'tok', 'tts', 'popped', 'joins', 'serial'}

-- The sale's settings and counters as numbers, or nil when the sale does not exist.
local function q_cfg()
  local v = redis.call('HMGET', K_CFG, unpack(Q_FIELDS))
  if not v[1] then
    return nil
  end
  local c = {}
  for i, f in ipairs(Q_FIELDS) do
    c[f] = tonumber(v[i]) or 0
  end
  return c
end

-- "<a>:<b>:<c>" -> a, b, c as numbers
local function q_split3(raw)
  local a, b, c = string.match(raw, '^(%d+):(%d+):(%d+)$')
  return tonumber(a), tonumber(b), tonumber(c)
end

local function q_place(user)
  local raw = redis.call('HGET', K_PLACES, user)
  if not raw then
    return nil, nil
  end
  local ticket, joined = string.match(raw, '^(%d+):(%d+)$')
  return tonumber(ticket), tonumber(joined)
end

-- Take the admission back and free the user's place (they may join again, at the back).
local function q_drop(user)
  redis.call('HDEL', K_ADM, user)
  redis.call('ZREM', K_EXP, user)
  redis.call('ZREM', K_IDLE, user)
  redis.call('HDEL', K_PLACES, user)
end

-- The user's live admission as serial, expires_ms; nil when none. A lapsed one (past its
-- expiry or idle deadline) is returned here, and the second result says so.
local function q_admission(user, now)
  local raw = redis.call('HGET', K_ADM, user)
  if not raw then
    return nil, nil, false
  end
  local serial, _, exp = q_split3(raw)
  local idle_dl = tonumber(redis.call('ZSCORE', K_IDLE, user) or '0')
  if exp <= now or idle_dl <= now then
    q_drop(user)
    return nil, nil, true
  end
  return serial, exp, false
end

-- The reply of queue_join and queue_status for a user with a place:
-- {Q_OK, admitted 0|1, ticket, joined_ms, ahead, popped, waiting, admitted_count, opens, closes,
--  rate, now, serial, admission_expires_ms, created 0|1, max}
-- An admitted user's request counts as activity: the idle deadline moves to now + idle.
local function q_state(cfg, user, now, created)
  local ticket, joined = q_place(user)
  if not ticket then
    return {Q_NOT_IN_QUEUE}
  end
  local waiting = redis.call('ZCARD', K_QUEUE)
  local admitted = redis.call('ZCARD', K_EXP)
  local serial, exp = q_admission(user, now)
  if serial then
    redis.call('ZADD', K_IDLE, 'XX', now + cfg.idle, user)
    return {Q_OK, 1, ticket, joined, 0, cfg.popped, waiting, admitted, cfg.opens, cfg.closes,
            cfg.rate, now, serial, exp, created, cfg.max}
  end
  local rank = redis.call('ZRANK', K_QUEUE, user)
  if not rank then
    return {Q_NOT_IN_QUEUE}
  end
  return {Q_OK, 0, ticket, joined, rank, cfg.popped, waiting, admitted, cfg.opens, cfg.closes,
          cfg.rate, now, 0, 0, created, cfg.max}
end
