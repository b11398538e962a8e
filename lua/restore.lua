-- restore: rebuild the sold bitmap from Postgres. replace = '1': sold := exactly these
-- seat-legs; '0': OR them in. Live holds on any sold seat-leg are revoked (status released);
-- taken: with replace, rebuilt as sold plus the live holds' seat-legs; else the new sold
-- seat-legs are set in it.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] sold: sold bitmap
-- KEYS[3] taken: taken bitmap (sold or held)
-- KEYS[4] deadlines: zset hold id -> deadline ms
-- KEYS[5] channel: the schedule's event channel
-- ARGV[1] lid: layout id the indices refer to
-- ARGV[2] replace: '1' or '0'
-- ARGV[3] sold: JSON [[a, b, [seat indices]], ...]
-- Returns: {OK, revoked holds} | {SCHEDULE_NOT_FOUND} | {LAYOUT_MISMATCH} | {INVALID_ARGUMENT}

-- @include lib/codes.lua
-- @include lib/common.lua

local m = redis.call('HMGET', KEYS[1], 'n', 'legs', 'lid', 'toff')
if not m[1] then return {SCHEDULE_NOT_FOUND} end
local now = ms_now(m[4])
local n, legs = tonumber(m[1]), tonumber(m[2])
reap(KEYS[1], KEYS[3], KEYS[4], legs, now)
local function done(reply)
  flush(KEYS[1], KEYS[5])
  return reply
end
if m[3] ~= ARGV[1] then return done({LAYOUT_MISMATCH}) end
local entries = sold_entries_of(ARGV[3], n, legs)
if not entries then return done({INVALID_ARGUMENT}) end

if ARGV[2] == '1' then
  redis.call('SET', KEYS[2], string.rep('\0', legs * math.ceil(n / 8)))
end
bits_write(KEYS[2], entries, legs, 1)
local revoked = after_sold(KEYS[1], KEYS[2], KEYS[3], KEYS[4], legs, entries, ARGV[2] == '1')
changes = {}
local v = bump_version(KEYS[1])
redis.call(PUB, KEYS[5], cjson.encode({v = v, reset = 1}))
return {OK, revoked}
