-- Shared by hold_seats.lua and hold_class.lua (same KEYS, same ARGV[1..11]).
-- Order: idempotency, rate limit, reap, validation, user live-hold limit; then the caller checks
-- or chooses seats and calls hold_commit.
--
-- Cost matters here (docs/ENGINE.md, Measurements): every redis.call and every Lua string made
-- costs, so the reap is skipped unless the earliest deadline has passed (the meta hash's `mdl`
-- hint, read with the rest of the meta; it also tells whether the due zset needs the new
-- deadline), the limit is one ZCOUNT, the user zset's TTL is one PEXPIRE, and the event is
-- formatted by hand.
--
-- On Cluster (CLUSTER): KEYS[5], KEYS[6] and KEYS[8] are stand-ins in the schedule's slot and
-- never touched; the caller ran user_reserve.lua first (rate limit, live-hold limit: ARGV[8] is
-- then -1 when the user is at the limit, else 0; ARGV[9] is 0) and runs user_finalize.lua and
-- the due ZADD after. KEYS[7] is the schedule-slot idempotency record.

local USER_KEY_TTL_MS = '172800000'  -- user zset TTL: longer than any hold (cleans up a crash)

local function hold_done(reply)
  flush(KEYS[1], KEYS[9])
  return reply
end

local function hold_begin()
  local meta = KEYS[1]
  local m = redis.call('HMGET', meta, 'n', 'legs', 'lid', 'st', 'dep', 'toff', 'mdl')
  local now = ms_now(m[6])
  -- 1. idempotency: the same key and body replay the first success
  if ARGV[10] == '1' then
    local rec = redis.call('GET', KEYS[7])
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
    local f = hold_fields(KEYS[4], ARGV[2])
    if f then return {OK, 0, unpack(f)} end
  end
  -- 2. rate limit: fixed one-minute window of attempts
  local rate = int_of(ARGV[9]) or 0
  if rate > 0 then
    local wait = over_rate(KEYS[6], rate)
    if wait then return {RATE_LIMITED, wait} end
  end
  -- 3. reap (only when the earliest deadline passed), then validate
  if not m[1] then return {SCHEDULE_NOT_FOUND} end
  local n, legs = int_of(m[1]), int_of(m[2])
  local min_deadline = tonumber(m[7])  -- a lower bound of the earliest deadline (`mdl`)
  if min_deadline and min_deadline <= now then
    reap(meta, KEYS[2], KEYS[3], legs, now)
    min_deadline = reset_deadline_hint(meta, KEYS[3])
  end
  if m[3] ~= ARGV[1] then return hold_done({LAYOUT_MISMATCH}) end
  local a, b, ttl = int_of(ARGV[5]), int_of(ARGV[6]), int_of(ARGV[7])
  if not a or not b or not ttl or a < 0 or b > legs or a >= b or ttl <= 0 then
    return hold_done({INVALID_ARGUMENT})
  end
  local dep = list_at(m[5], a)
  if m[4] == 'cancelled' or not dep or now >= dep then return hold_done({SALE_CLOSED}) end
  -- 4. the user's live-hold limit (expired entries do not count; ended ones were removed)
  local max_active = int_of(ARGV[8]) or 0
  if max_active < 0 then return hold_done({HOLD_LIMIT}) end
  if max_active > 0
    and redis.call('ZCOUNT', KEYS[5], '(' .. string.format('%d', now), '+inf') >= max_active then
    return hold_done({HOLD_LIMIT})
  end
  return nil, {now = now, n = n, legs = legs, a = a, b = b, ttl = ttl, dep = dep,
    min_deadline = min_deadline, max_active = max_active}
end

-- The bits of `seats` per seat group (masks[j]) and the lowest and highest group; nil when a
-- seat is given twice (its bit was set already) or, with `n`, is not a seat index below n.
local function group_masks(seats, n)
  local bor, rshift = bit.bor, bit.rshift
  local masks, lo, hi = {}, nil, nil
  for _, i in ipairs(seats) do
    if n and (not i or i < 0 or i >= n or i ~= math.floor(i)) then return nil end
    local j = (i - i % 8) / 8
    local cur = masks[j] or 0
    local m = bor(cur, rshift(128, i % 8))
    if m == cur then return nil end
    masks[j] = m
    if not lo or j < lo then lo = j end
    if not hi or j > hi then hi = j end
  end
  return masks, lo, hi
end

-- The taken bitmap's span from leg a of group lo to leg b-1 of group hi with the bits of `masks`
-- set on legs [a, b): what SETRANGE writes at lo*legs + a. `taken` is the bitmap's bytes from
-- 0-based offset `off` on, covering the span (zero-padded by the caller). The seats are free
-- on those legs, so setting their bits is an addition (no `bit.bor` call per byte).
local function marked_span(ctx, masks, lo, hi, taken, off)
  local legs, a, nrow = ctx.legs, ctx.a, ctx.b - ctx.a
  local byte, char, sub = string.byte, string.char, string.sub
  local parts, np, cur = {}, 0, {}
  for j = lo, hi do
    local p = j * legs + a - off + 1
    local m = masks[j]
    np = np + 1
    if m then
      local v = {byte(taken, p, p + nrow - 1)}
      for k = 1, nrow do cur[k] = v[k] + m end
      parts[np] = char(unpack(cur, 1, nrow))
    else
      parts[np] = sub(taken, p, p + nrow - 1)
    end
    if j < hi then
      np = np + 1
      parts[np] = sub(taken, p + nrow, p + legs - 1)
    end
  end
  return table.concat(parts)
end

-- Make the hold of `seats` (known free): its taken bits, written from `taken`, the taken
-- bitmap's bytes from 0-based offset `off` on (covering the seats' groups on legs [a, b)); then
-- its hash, deadline, bookkeeping and event. `masks, lo, hi`: group_masks(seats), when the
-- caller has it.
local function hold_commit(ctx, seats, taken, off, masks, lo, hi)
  local hid, user = ARGV[2], ARGV[3]
  local now = ctx.now
  if not masks then masks, lo, hi = group_masks(seats) end
  local span = marked_span(ctx, masks, lo, hi, taken, off)
  redis.call('SETRANGE', KEYS[2], int_text(lo * ctx.legs + ctx.a), span)
  local exp = math.min(now + ctx.ttl, ctx.dep)
  local exps, nows = string.format('%d', exp), string.format('%d', now)
  local s, as, bs = ints_text(seats), int_text(ctx.a), int_text(ctx.b)
  -- 'tu' = '1': the hold is in the user's live-hold zset (kept only while the limit is on)
  local tracked = not CLUSTER and ctx.max_active > 0
  if tracked then
    redis.call('HSET', KEYS[4], 'user', user, 'a', as, 'b', bs, 'seats', s, 'exp', exps,
      'st', 'held', 'ts', nows, 'tu', '1')
  else
    redis.call('HSET', KEYS[4], 'user', user, 'a', as, 'b', bs, 'seats', s, 'exp', exps,
      'st', 'held', 'ts', nows)
  end
  redis.call('PEXPIRE', KEYS[4], string.format('%d', exp - now + 86400000))
  redis.call('ZADD', KEYS[3], exps, hid)
  -- the due zset's score is <= the earliest deadline (and so <= `mdl`): only a deadline below
  -- the hint can be a new earliest one, and only then must both be lowered
  local earliest = note_deadline(KEYS[1], ctx.min_deadline, exp)
  if not CLUSTER then
    if earliest then redis.call('ZADD', KEYS[8], 'LT', exps, ARGV[4]) end
    -- the user's zset serves only the live-hold limit: with the limit off it is not kept
    -- (turning the limit on counts the holds made from then on)
    if tracked then
      redis.call('ZADD', KEYS[5], exps, hid)
      redis.call('PEXPIRE', KEYS[5], USER_KEY_TTL_MS)
    end
  end
  if ARGV[10] == '1' then
    redis.call('SET', KEYS[7], ARGV[11] .. '\n' .. hid, 'PX', 86400000)
  end
  note_text(as, bs, s)
  flush(KEYS[1], KEYS[9])
  -- the caller knows the rest (hold id, user, legs; status held, no booking): a shorter reply
  -- is cheaper to convert (~1.3k instructions per element)
  return {OK, 0, s, exps, nows}
end
