-- Shared by hold_seats.lua and hold_class.lua (same KEYS, same ARGV[1..11]).
-- Order: idempotency, rate limit, reap, validation, user live-hold limit; then the caller checks
-- or chooses seats and calls hold_commit.
--
-- Cost matters here (docs/ENGINE.md, Measurements): every redis.call and every Lua string made
-- costs, so the reap is skipped unless the earliest deadline has passed (one ZRANGE 0 0 that
-- also tells whether the due zset needs the new deadline), the limit is one ZCOUNT, the user
-- zset's TTL is one PEXPIRE, and the event is formatted by hand.
--
-- On Cluster (CLUSTER): KEYS[6], KEYS[7] and KEYS[9] are stand-ins in the schedule's slot and
-- never touched; the caller ran user_reserve.lua first (rate limit, live-hold limit: ARGV[8] is
-- then -1 when the user is at the limit, else 0; ARGV[9] is 0) and runs user_finalize.lua and
-- the due ZADD after. KEYS[8] is the schedule-slot idempotency record.

local USER_KEY_TTL_MS = 172800000  -- user zset TTL: longer than any hold (cleans up a crash)

local function hold_done(reply)
  flush(KEYS[1], KEYS[10])
  return reply
end

local function hold_begin()
  local meta = KEYS[1]
  local m = redis.call('HMGET', meta, 'n', 'legs', 'lid', 'st', 'dep', 'toff')
  local now = ms_now(m[6])
  -- 1. idempotency: the same key and body replay the first success
  if ARGV[10] == '1' then
    local rec = redis.call('GET', KEYS[8])
    if rec then
      local sep = string.find(rec, '\n', 1, true)
      if sep and string.sub(rec, 1, sep - 1) ~= ARGV[11] then
        return {IDEMPOTENCY_CONFLICT}
      end
      if sep then
        local old = string.sub(rec, sep + 1)
        local f = hold_fields(schedule_base(meta) .. 'hold:' .. old, old)
        if f then
          return {OK, 1, unpack(f)}
        end
      end
    end
  end
  if CLUSTER then
    -- this very hold exists: a retry of this call (its reply was lost in a failover), or a
    -- replay whose schedule-side record is gone: answer with the hold
    local f = hold_fields(KEYS[5], ARGV[2])
    if f then return {OK, 0, unpack(f)} end
  end
  -- 2. rate limit: fixed one-minute window of attempts
  local rate = tonumber(ARGV[9]) or 0
  if rate > 0 then
    local wait = over_rate(KEYS[7], rate)
    if wait then return {RATE_LIMITED, wait} end
  end
  -- 3. reap (only when the earliest deadline passed), then validate
  if not m[1] then return {SCHEDULE_NOT_FOUND} end
  local n, legs = tonumber(m[1]), tonumber(m[2])
  local rb = math.ceil(n / 8)
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  local min_deadline = tonumber(first[2])
  if min_deadline and min_deadline <= now then
    reap(meta, KEYS[3], KEYS[4], rb, now)
    min_deadline = nil
  end
  if m[3] ~= ARGV[1] then return hold_done({LAYOUT_MISMATCH}) end
  local a, b, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  if not a or not b or not ttl or a < 0 or b > legs or a >= b or ttl <= 0 then
    return hold_done({INVALID_ARGUMENT})
  end
  local dep = list_at(m[5], a)
  if m[4] == 'cancelled' or not dep or now >= dep then return hold_done({SALE_CLOSED}) end
  -- 4. the user's live-hold limit (expired entries do not count; ended ones were removed)
  local max_active = tonumber(ARGV[8]) or 0
  if max_active < 0 then return hold_done({HOLD_LIMIT}) end
  if max_active > 0
    and redis.call('ZCOUNT', KEYS[6], '(' .. string.format('%d', now), '+inf') >= max_active then
    return hold_done({HOLD_LIMIT})
  end
  return nil, {now = now, n = n, legs = legs, rb = rb, a = a, b = b, ttl = ttl, dep = dep,
    min_deadline = min_deadline, max_active = max_active}
end

-- Set the held bits of `seats` (sorted or not) on legs [ctx.a, ctx.b), given `rows`: the held
-- bitmap's bytes from row `row0` on (a GETRANGE covering rows a..b-1, already read for the
-- check, whose bits for these seats are known to be 0). One SETRANGE over the rows a..b-1.
local function hold_mark(ctx, seats, rows, row0)
  local rb, a, b = ctx.rb, ctx.a, ctx.b
  if #rows < (b - row0) * rb then
    return bits_write(KEYS[3], {{a, b, seats}}, rb, 1)
  end
  local bor, rshift, byte, char, sub = bit.bor, bit.rshift, string.byte, string.char, string.sub
  local masks, lo, hi = {}, nil, nil
  for _, i in ipairs(seats) do
    local j = (i - i % 8) / 8
    masks[j] = bor(masks[j] or 0, rshift(128, i % 8))
    if not lo or j < lo then lo = j end
    if not hi or j > hi then hi = j end
  end
  local w = hi - lo + 1
  local mk = {}
  for q = 1, w do mk[q] = masks[lo + q - 1] or 0 end
  local parts, np = {}, 0
  local cur = {}
  for k = a, b - 1 do
    local base = (k - row0) * rb + lo
    for q = 1, w do cur[q] = bor(byte(rows, base + q), mk[q]) end
    np = np + 1
    parts[np] = char(unpack(cur, 1, w))
    if k < b - 1 then
      np = np + 1
      parts[np] = sub(rows, base + w + 1, base + rb)
    end
  end
  redis.call('SETRANGE', KEYS[3], a * rb + lo, table.concat(parts))
end

-- held_rows: GETRANGE of the held bitmap from row `row0` on, covering rows a..b-1; nil when the
-- caller already set the held bits (hold_seats writes them in its checking pass)
local function hold_commit(ctx, seats, held_rows, row0)
  local hid, user = ARGV[2], ARGV[3]
  local now = ctx.now
  if held_rows then hold_mark(ctx, seats, held_rows, row0) end
  local exp = math.min(now + ctx.ttl, ctx.dep)
  local exps, nows = string.format('%d', exp), string.format('%d', now)
  local s = table.concat(seats, ',')
  redis.call('HSET', KEYS[5], 'user', user, 'a', ctx.a, 'b', ctx.b, 'seats', s, 'exp', exps,
    'st', 'held', 'ts', nows)
  redis.call('PEXPIRE', KEYS[5], exp - now + 86400000)
  redis.call('ZADD', KEYS[4], exps, hid)
  if not CLUSTER then
    -- the due zset's score is <= the earliest deadline; only a new earliest one must lower it
    if not ctx.min_deadline or ctx.min_deadline > exp then
      redis.call('ZADD', KEYS[9], 'LT', exps, ARGV[4])
    end
    -- the user's zset serves only the live-hold limit: with the limit off it is not kept
    -- (turning the limit on counts the holds made from then on)
    if ctx.max_active > 0 then
      redis.call('ZADD', KEYS[6], exps, hid)
      redis.call('PEXPIRE', KEYS[6], USER_KEY_TTL_MS)
    end
  end
  if ARGV[10] == '1' then
    redis.call('SET', KEYS[8], ARGV[11] .. '\n' .. hid, 'PX', 86400000)
  end
  note(ctx.a, ctx.b, seats)
  flush(KEYS[1], KEYS[10])
  return {OK, 0, hid, user, tostring(ctx.a), tostring(ctx.b), s, 'held', exps, nows, ''}
end
