-- A user's place in a sale's queue, now (an admitted user's request counts as activity).
-- KEYS[1] cfg
-- KEYS[2] queue
-- KEYS[3] places
-- KEYS[4] adm
-- KEYS[5] adm_exp
-- KEYS[6] adm_idle
-- ARGV[1] user
-- Returns the q_state reply (lib/queue.lua) | {Q_SALE_NOT_FOUND} | {Q_NOT_IN_QUEUE}
-- @include lib/queue.lua

local cfg = q_cfg()
if not cfg then
  return {Q_SALE_NOT_FOUND}
end
return q_state(cfg, ARGV[1], q_now_ms(), 0)
