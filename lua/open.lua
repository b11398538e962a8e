-- open: create or replace a schedule's inventory.
-- No inventory yet: create it (sold seat-legs from Postgres applied in the same call).
-- Same layout id: update departures and status; sold seat-legs are OR'ed in (live holds on
-- them revoked). Other layout id: SCHEDULE_IN_USE if any seat-leg is held or sold, else
-- replace. Create and replace publish {"v", "reset": 1}. Versions never go backwards (a new
-- inventory starts at the current time in ms), so a cached snapshot is never mistaken.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] layout: compressed layout blob
-- KEYS[3] sold: sold bitmap
-- KEYS[4] taken: taken bitmap (sold or held)
-- KEYS[5] deadlines: zset hold id -> deadline ms
-- KEYS[6] schedules: global set of open schedule ids (not touched on Cluster: the caller adds)
-- KEYS[7] channel: the schedule's event channel
-- ARGV[1] schedule_id
-- ARGV[2] lid: layout id
-- ARGV[3] n: seats
-- ARGV[4] legs
-- ARGV[5] dep: comma list, per stop, of the ms at which its journeys stop selling
-- ARGV[6] cls: class spans "class:start:end,..."
-- ARGV[7] cars: car spans "start:end,..."
-- ARGV[8] layout: the layout blob
-- ARGV[9] status
-- ARGV[10] delay_minutes
-- ARGV[11] reason
-- ARGV[12] sold: JSON [[a, b, [seat indices]], ...]
-- Returns: {OK, created (0/1), changed (0/1), version} | {SCHEDULE_IN_USE} | {INVALID_ARGUMENT}

-- @include lib/codes.lua
-- @include lib/common.lua

local n, legs, delay = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[10])
local st = ARGV[9]
if not n or n < 1 or not legs or legs < 1 or not delay or delay < 0
  or (st ~= 'scheduled' and st ~= 'delayed' and st ~= 'cancelled') then
  return {INVALID_ARGUMENT}
end
local sold_entries = sold_entries_of(ARGV[12], n, legs)
if not sold_entries then return {INVALID_ARGUMENT} end
local size = legs * math.ceil(n / 8)

local m = redis.call('HMGET', KEYS[1], 'lid', 'toff', 'legs', 'dep', 'st', 'delay', 'reason', 'ver')
local now = ms_now(m[2])

local function fresh(version)
  redis.call('HSET', KEYS[1], 'n', n, 'legs', legs, 'lid', ARGV[2], 'ver', version, 'st', st,
    'delay', delay, 'reason', ARGV[11], 'dep', ARGV[5], 'cls', ARGV[6], 'cars', ARGV[7])
  redis.call('SET', KEYS[2], ARGV[8])
  redis.call('SET', KEYS[3], string.rep('\0', size))
  redis.call('SET', KEYS[4], string.rep('\0', size))
  redis.call('DEL', KEYS[5])
  redis.call('HDEL', KEYS[1], 'mdl')  -- no deadlines: no hint (lib/common.lua, note_deadline)
  bits_write(KEYS[3], sold_entries, legs, 1, KEYS[4])
  if not CLUSTER then redis.call('SADD', KEYS[6], ARGV[1]) end
  redis.call(PUB, KEYS[7], cjson.encode({v = version, reset = 1}))
end

if not m[1] then
  fresh(now)
  return {OK, 1, 1, now}
end

reap(KEYS[1], KEYS[4], KEYS[5], tonumber(m[3]), now)

if m[1] ~= ARGV[2] then
  if redis.call('BITCOUNT', KEYS[4]) > 0 then  -- taken: sold or held
    flush(KEYS[1], KEYS[7])
    return {SCHEDULE_IN_USE}
  end
  changes = {}
  local version = math.max(tonumber(redis.call('HGET', KEYS[1], 'ver')) + 1, now)
  fresh(version)
  return {OK, 0, 1, version}
end

-- same layout: sold seat-legs OR'ed in, then departures and status
flush(KEYS[1], KEYS[7])
if not CLUSTER then redis.call('SADD', KEYS[6], ARGV[1]) end
local changed = 0
if #sold_entries > 0 then
  if bits_write(KEYS[3], sold_entries, legs, 1) > 0 then
    after_sold(KEYS[1], KEYS[3], KEYS[4], KEYS[5], legs, sold_entries)
    for _, e in ipairs(sold_entries) do note(e[1], e[2], e[3]) end
    flush(KEYS[1], KEYS[7])
    changed = 1
  end
end
if m[4] ~= ARGV[5] or m[5] ~= st or tonumber(m[6]) ~= delay or m[7] ~= ARGV[11] then
  redis.call('HSET', KEYS[1], 'dep', ARGV[5], 'st', st, 'delay', delay, 'reason', ARGV[11])
  local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
  redis.call(PUB, KEYS[7], cjson.encode({v = v, st = st, delay = delay, reason = ARGV[11]}))
  changed = 1
end
return {OK, 0, changed, tonumber(redis.call('HGET', KEYS[1], 'ver'))}
