-- For the WebSocket watchers: the sale's counters and, for each given user, where they stand.
-- Read only (a watcher's poll is not the user's activity).
-- KEYS[1] cfg
-- KEYS[2] queue
-- KEYS[3] places
-- KEYS[4] adm
-- KEYS[5] adm_exp
-- KEYS[6] adm_idle
-- ARGV[1] users, a msgpack array of strings (may be empty)
-- Returns {Q_OK, popped, waiting, admitted, opens, closes, rate, now, then per user: rank, serial,
--   expires_ms} with rank >= 0 waiting (0-based), -2 admitted (serial, expires_ms set), -1 no place
--   | {Q_SALE_NOT_FOUND}
-- @include lib/queue.lua

local cfg = q_cfg()
if not cfg then
  return {Q_SALE_NOT_FOUND}
end
local now = q_now_ms()
local reply = {Q_OK, cfg.popped, redis.call('ZCARD', K_QUEUE), redis.call('ZCARD', K_EXP),
               cfg.opens, cfg.closes, cfg.rate, now}
for _, user in ipairs(cmsgpack.unpack(ARGV[1])) do
  local rank = redis.call('ZRANK', K_QUEUE, user)
  if rank then
    reply[#reply + 1] = rank
    reply[#reply + 1] = 0
    reply[#reply + 1] = 0
  else
    local raw = redis.call('HGET', K_ADM, user)
    local serial, _, exp
    if raw then
      serial, _, exp = q_split3(raw)
    end
    if serial and exp > now then
      reply[#reply + 1] = -2
      reply[#reply + 1] = serial
      reply[#reply + 1] = exp
    else
      reply[#reply + 1] = -1
      reply[#reply + 1] = 0
      reply[#reply + 1] = 0
    end
  end
end
return reply
