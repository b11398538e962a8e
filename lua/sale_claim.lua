-- Claim a sale's schedules in the sale directory: a schedule is in at most one active sale
-- (one whose closes_at has not passed). Runs before sale_put; both are idempotent.
-- KEYS[1] claims: hash schedule id -> "<sale_id>|<closes ms>"
-- KEYS[2] index: zset sale id -> closes ms (the sales the admission loops tick)
-- ARGV[1] sale id
-- ARGV[2] closes_at, epoch ms
-- ARGV[3] schedule ids, comma separated
-- Returns {Q_OK} | {Q_SALE_CONFLICT, schedule_id, other_sale_id}
-- Claims of the sale on schedules it no longer lists are released; claims of closed sales are
-- pruned; sales closed for more than 7 days leave the index.
-- @include lib/queue_codes.lua

local sale, closes = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local wanted, list = {}, {}
for s in string.gmatch(ARGV[3], '[^,]+') do
  if not wanted[s] then
    wanted[s] = true
    list[#list + 1] = s
  end
end

if closes > now then
  for _, s in ipairs(list) do
    local cur = redis.call('HGET', KEYS[1], s)
    if cur then
      local other, other_closes = string.match(cur, '^(.*)|(%d+)$')
      if other ~= sale and tonumber(other_closes) > now then
        return {Q_SALE_CONFLICT, s, other}
      end
    end
  end
end

local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local other, other_closes = string.match(all[i + 1], '^(.*)|(%d+)$')
  if (other == sale and not wanted[all[i]]) or tonumber(other_closes) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
for _, s in ipairs(list) do
  redis.call('HSET', KEYS[1], s, sale .. '|' .. ARGV[2])
end
redis.call('ZADD', KEYS[2], closes, sale)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 7 * 86400000)
return {Q_OK}
