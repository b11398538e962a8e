-- cancel: a cancelled booking's seat-legs, sold -> free (cleared in sold and in taken).
-- Seat-legs that are not sold are left alone; if none of them is sold, nothing changes.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] sold: sold bitmap
-- KEYS[3] taken: taken bitmap (sold or held)
-- KEYS[4] deadlines: zset hold id -> deadline ms
-- KEYS[5] channel: the schedule's event channel
-- ARGV[1] lid: layout id the indices refer to
-- ARGV[2] a: first leg
-- ARGV[3] b: end leg (exclusive)
-- ARGV[4] seats: comma list of seat indices
-- Returns: {OK, freed seat-legs} | {NOT_SOLD} | {SCHEDULE_NOT_FOUND} | {LAYOUT_MISMATCH}
--   | {INVALID_ARGUMENT}

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
local a, b = tonumber(ARGV[2]), tonumber(ARGV[3])
local seats = split_ints(ARGV[4])
if not a or not b or a < 0 or b > legs or a >= b or #seats == 0 then
  return done({INVALID_ARGUMENT})
end
for _, i in ipairs(seats) do
  if not i or i < 0 or i >= n or i ~= math.floor(i) then return done({INVALID_ARGUMENT}) end
end
local freed = bits_write(KEYS[2], {{a, b, seats}}, legs, 0, KEYS[3])
if freed == 0 then return done({NOT_SOLD}) end
note(a, b, seats)
return done({OK, freed})
