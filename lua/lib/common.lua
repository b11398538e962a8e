-- Shared helpers: clock, key derivation, bit writes, the change log, reaping.
-- Bitmaps are seat-group-major: byte j*legs + k (0-based) holds seats 8j..8j+7 of leg k, seat
-- 8j + q at bit 7 - q (most significant first). A seat group's legs are adjacent, so a journey of
-- one group is one short contiguous span (docs/ENGINE.md, "Seats, legs, bitmaps").
-- A schedule has two: `sold` and `taken` (sold or held; sold is always a subset). A hold reads
-- and writes `taken` only, a confirm sets `sold` only, an ended hold clears `taken` only; held
-- is `taken` and not `sold`.
-- CLUSTER (boolean) and PUB ('PUBLISH' or 'SPUBLISH') are defined by the registry at load time
-- (engine/scripts.py): on Redis Cluster a script touches its schedule's slot only, so the
-- user-side and global bookkeeping is done by the caller (see docs/SCALING.md).

-- Redis TIME in ms, plus the schedule's test clock offset (meta `toff`; see docs/ENGINE.md).
local function ms_now(toff)
  local t = redis.call('TIME')
  local us = tonumber(t[2])
  return tonumber(t[1]) * 1000 + (us - us % 1000) / 1000 + (toff and tonumber(toff) or 0)
end

-- "<prefix>:{s:ID}:meta" -> "<prefix>:{s:ID}:"
local function schedule_base(meta_key)
  return string.sub(meta_key, 1, #meta_key - 4)
end

-- The user's live-hold zset "<prefix>:{u:USER}:holds" (another slot: see ENGINE.md, Cluster).
local function user_holds_key(meta_key, user)
  local p = string.find(meta_key, ':{s:', 1, true)
  return string.sub(meta_key, 1, p) .. '{u:' .. user .. '}:holds'
end

-- The decimal text of a non-negative integer below a schedule's size (a seat index, a leg, a
-- bitmap offset), made once and kept at library level. Lua makes a number's text with
-- sprintf("%.14g") (tostring, .., table.concat) and redis.call a number argument's with "%.17g":
-- ~2k instructions of float formatting each, several per hold (docs/PERFORMANCE.md, "Sixth
-- pass"). Pass redis.call numbers as text for the same reason (string.format('%d') for others).
local INT_TEXT = {}
local function int_text(i)
  local t = INT_TEXT[i]
  if not t then
    t = string.format('%d', i)
    INT_TEXT[i] = t
  end
  return t
end

-- The number of a decimal text of such an integer (or of a limit, a TTL: few distinct texts),
-- kept at library level (dropped wholesale past INT_OF_MAX texts). `tonumber` goes through
-- strtod: ~1k instructions a call, where a lookup of an (interned) string is a few dozen.
local INT_OF, int_of_n, INT_OF_MAX = {}, 0, 65536
local function int_of(s)
  local v = INT_OF[s]
  if v == nil then
    v = tonumber(s)
    if v then
      if int_of_n >= INT_OF_MAX then INT_OF, int_of_n = {}, 0 end
      INT_OF[s], int_of_n = v, int_of_n + 1
    end
  end
  return v
end

-- Texts of a list of such integers joined by commas.
local function ints_text(list)
  local t = {}
  for k = 1, #list do t[k] = int_text(list[k]) end
  return table.concat(t, ',')
end

-- The numbers of a comma list of such integers (`parse`: another parser, e.g. tonumber).
local function split_ints(s, parse)
  local out = {}
  if not s or s == '' then return out end
  parse = parse or int_of
  for v in string.gmatch(s, '[^,]+') do out[#out + 1] = parse(v) end
  return out
end

-- The a-th (0-based) number of a comma list, the list parsed once per text and kept at library
-- level (dropped wholesale past LISTS_MAX texts): every hold reads the a-th departure of its
-- schedule's `dep`, 21 13-digit numbers whose parsing (`tonumber` goes through strtod's
-- multi-precision path) cost more than the lookup.
local LISTS, lists_n, LISTS_MAX = {}, 0, 1024
local function list_at(s, a)
  if not s then return nil end
  local list = LISTS[s]
  if not list then
    list = split_ints(s, tonumber)  -- one-off numbers: not int_of's
    if lists_n >= LISTS_MAX then LISTS, lists_n = {}, 0 end
    LISTS[s], lists_n = list, lists_n + 1
  end
  return list[a + 1]
end

-- The fields every script reads of a hold it may end: h[1] status, h[2] a, h[3] b, h[4] seats,
-- h[5] user, h[6] '1' when the hold is in the user's live-hold zset (the limit was on); then
-- any further fields asked for.
local function hold_state(hk, ...)
  return redis.call('HMGET', hk, 'st', 'a', 'b', 'seats', 'user', 'tu', ...)
end

-- Sold seat-legs given as JSON [[a, b, [seat indices]], ...] (open, restore), checked against a
-- schedule of n seats and `legs` legs: a list of {a, b, seats}, or nil when anything is off.
local function sold_entries_of(text, n, legs)
  local ok, entries = pcall(cjson.decode, text)
  if not ok or type(entries) ~= 'table' then return nil end
  local out = {}
  for _, e in ipairs(entries) do
    local a, b, seats = tonumber(e[1]), tonumber(e[2]), e[3]
    if not a or not b or a < 0 or b > legs or a >= b or type(seats) ~= 'table' then return nil end
    for _, i in ipairs(seats) do
      if type(i) ~= 'number' or i < 0 or i >= n or i ~= math.floor(i) then return nil end
    end
    out[#out + 1] = {a, b, seats}
  end
  return out
end

-- A hold's legs and seats from its state h (hold_state): {a, b, seats}, as bits_write takes them.
local function seat_legs(h)
  return {int_of(h[2]), int_of(h[3]), split_ints(h[4])}
end

-- The live holds (held or confirming) among the schedule's hold ids `hids`: a list of
-- {hk, hid, h} (h = hold_state(hk)).
local function live_among(meta_key, hids)
  local base = schedule_base(meta_key) .. 'hold:'
  local out = {}
  for _, hid in ipairs(hids) do
    local hk = base .. hid
    local h = hold_state(hk)
    if h[1] == 'held' or h[1] == 'confirming' then out[#out + 1] = {hk, hid, h} end
  end
  return out
end

-- Drop an ended hold from its owner's live-hold zset, if it was put there.
local function untrack(meta_key, h, hid)
  if not CLUSTER and h[6] == '1' then redis.call('ZREM', user_holds_key(meta_key, h[5]), hid) end
end

-- Bits set in each byte value (built once, when the library loads: library-level code may not
-- read globals such as `bit` or `string` while Redis 7.0 loads it, only define functions).
local POPCOUNT = {}
for v = 0, 255 do
  local c, x = 0, v
  while x > 0 do
    c = c + x % 2
    x = (x - x % 2) / 2
  end
  POPCOUNT[v] = c
end

-- A run of bytes that bits_write rewrites ends at a gap of more than SPAN_GAP bytes: a
-- redis.call costs about as much as moving ~900 bytes through GETRANGE/SETRANGE
-- (docs/PERFORMANCE.md, "Fourth pass"), and a seat group's legs are adjacent, so holds far apart
-- in the train are separate short runs rather than one span over the bitmap. (A BITFIELD of one
-- u1 op per seat-leg costs ~1 us per op.)
local SPAN_GAP = 512

-- `s` with zero bytes up to length `want` (a bitmap shorter than its schedule reads as free).
local function zero_padded(s, want)
  if #s < want then return s .. string.rep('\0', want - #s) end
  return s
end

-- One run of byte positions pos[q..r] of the bitmap `key` rewritten byte by byte as
-- f(old byte, position): one GETRANGE, and one SETRANGE when a bit changed. Returns how many
-- bits changed and the run's old bytes (from pos[q] on).
local function rewrite_run(key, pos, q, r, f)
  local lo, hi = pos[q], pos[r]
  local los = int_text(lo)
  local cur = zero_padded(redis.call('GETRANGE', key, los, int_text(hi)), hi - lo + 1)
  local byte, char, sub, bxor = string.byte, string.char, string.sub, bit.bxor
  local parts, np, prev, changed = {}, 0, lo, 0
  for k = q, r do
    local p = pos[k]
    if p > prev then
      np = np + 1
      parts[np] = sub(cur, prev - lo + 1, p - lo)
    end
    local v = byte(cur, p - lo + 1)
    local w = f(v, p)
    changed = changed + POPCOUNT[bxor(v, w)]
    np = np + 1
    parts[np] = char(w)
    prev = p + 1
  end
  if changed > 0 then redis.call('SETRANGE', key, los, table.concat(parts)) end
  return changed, cur
end

-- Set (value 1) or clear (value 0) the seat-legs of `entries` ({{a, b, seats}, ...}: legs
-- [a, b) x seats) in the bitmap `key`: one GETRANGE and one SETRANGE per run of bytes they
-- cover. With `mirror` (the taken bitmap when `key` is sold) the same change is made there: set
-- all those bits, or clear the bits that were set in `key` (seat-legs not sold stay as they are
-- in taken: another hold may have them). Returns how many bits changed in `key`; nothing is
-- written where none did.
local function bits_write(key, entries, legs, value, mirror)
  local band, bor, bnot, rshift = bit.band, bit.bor, bit.bnot, bit.rshift
  local masks = {}
  for _, e in ipairs(entries) do
    local a, b = e[1], e[2]
    for _, i in ipairs(e[3]) do
      local j = (i - i % 8) / 8
      local m = rshift(128, i % 8)
      for p = j * legs + a, j * legs + b - 1 do
        masks[p] = bor(masks[p] or 0, m)
      end
    end
  end
  local pos, n = {}, 0
  for p in pairs(masks) do
    n = n + 1
    pos[n] = p
  end
  table.sort(pos)
  local function set(v, p) return bor(v, masks[p]) end
  local function clear(v, p) return band(v, bnot(masks[p])) end
  local changed, q = 0, 1
  while q <= n do
    -- one run: pos[q] .. pos[r], no gap wider than SPAN_GAP
    local r = q
    while r < n and pos[r + 1] - pos[r] <= SPAN_GAP do r = r + 1 end
    local run_changed, cur = rewrite_run(key, pos, q, r, value == 1 and set or clear)
    if mirror and value == 1 then
      rewrite_run(mirror, pos, q, r, set)
    elseif mirror and run_changed > 0 then
      local lo, byte = pos[q], string.byte
      rewrite_run(mirror, pos, q, r, function(v, p)  -- only the bits cleared in `key`
        return band(v, bnot(band(masks[p], byte(cur, p - lo + 1))))
      end)
    end
    changed = changed + run_changed
    q = r + 1
  end
  return changed
end

-- Whether seat i of leg k is set in the bitmap string `s` (seat-group-major, see above).
local function bit_at(s, legs, k, i)
  local v = string.byte(s, (i - i % 8) / 8 * legs + k + 1) or 0
  return bit.band(v, bit.rshift(128, i % 8)) ~= 0
end

-- A fixed one-minute window of attempts on `key`: nil while at most `rate`, else the ms until
-- the window ends (a counter that lost its expiry gets a fresh window).
local function over_rate(key, rate)
  local c = redis.call('INCR', key)
  if c == 1 then redis.call('PEXPIRE', key, '60000') end
  if c <= rate then return nil end
  local pt = redis.call('PTTL', key)
  if pt < 0 then
    redis.call('PEXPIRE', key, '60000')
    pt = 60000
  end
  return pt
end

-- Change log of this call: one version bump and one event for all of it. Entries are kept as
-- ready JSON text ("[a,b,[i,j]]"): cheaper than cjson for this fixed shape.
local changes = {}
-- @on-call if changes[1] then changes = {} end
-- a, b and the comma list of seats as ready text
local function note_text(a, b, seats)
  changes[#changes + 1] = '[' .. a .. ',' .. b .. ',[' .. seats .. ']]'
end
local function note(a, b, seats)
  note_text(a, b, table.concat(seats, ','))
end

-- The schedule's next version after a reset (open, rebuild): one more than the last and never
-- behind Redis' clock in ms, so a Redis restored from an older copy, once rebuilt, never hands
-- out a version it already published. Ordinary changes add 1 (subscribers detect gaps by it).
local function bump_version(meta_key)
  local t = redis.call('TIME')
  local floor = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local v = math.max((tonumber(redis.call('HGET', meta_key, 'ver')) or 0) + 1, floor)
  redis.call('HSET', meta_key, 'ver', string.format('%d', v))
  return v
end

local function flush(meta_key, channel)
  if #changes == 0 then return nil end
  local v = redis.call('HINCRBY', meta_key, 'ver', '1')
  redis.call(PUB, channel, '{"v":' .. string.format('%d', v) .. ',"ch":['
    .. table.concat(changes, ',') .. ']}')
  changes = {}
  return v
end

local function hold_fields(hk, hid)
  local h = redis.call('HMGET', hk, 'user', 'a', 'b', 'seats', 'st', 'exp', 'ts', 'bk')
  if not h[1] then return nil end
  return {hid, h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8] or ''}
end

-- End a live hold (held/confirming): clear its taken bits (a live hold's seat-legs are never
-- sold), set its status, forget its deadline. h = hold_state(hk)
local function end_hold(meta_key, taken_key, deadlines_key, legs, hk, hid, h, status)
  bits_write(taken_key, {seat_legs(h)}, legs, 0)
  redis.call('HSET', hk, 'st', status)
  redis.call('ZREM', deadlines_key, hid)
  untrack(meta_key, h, hid)
  note_text(h[2], h[3], h[4])
end

-- The schedule's earliest-deadline hint, meta `mdl`: while the deadlines zset has entries, `mdl`
-- is at most its lowest score (a lower bound; absent or stale-low is safe, never too high). The
-- hold path reads it with the meta hash instead of reading the zset: every ZADD to the zset
-- lowers it (note_deadline), a reap that ran resets it from the zset (reset_deadline_hint).
local function note_deadline(meta_key, hint, deadline)
  if not hint or deadline < hint then
    redis.call('HSET', meta_key, 'mdl', string.format('%d', deadline))
    return true
  end
  return false
end

-- Returns the earliest deadline (nil: none) as a number and as Redis wrote it.
local function reset_deadline_hint(meta_key, deadlines_key)
  local first = redis.call('ZRANGE', deadlines_key, '0', '0', 'WITHSCORES')
  if first[2] then
    redis.call('HSET', meta_key, 'mdl', first[2])
  else
    redis.call('HDEL', meta_key, 'mdl')
  end
  return tonumber(first[2]), first[2]
end

-- Holds this library's reap() has expired since the library was (re)loaded on this server, by
-- key prefix (deployments sharing a Redis share the library: each counts its own): a
-- library-level local (lib files are pasted once at library level, engine/scripts.py), so it
-- lives between calls of every function; it starts again at 0 when Redis restarts (or loses its
-- functions) and the library is loaded again. Read by expired_total.lua for the metric
-- kai_inventory_holds_expired_total: no extra redis.call on the write path.
local EXPIRED_TOTAL = {}

-- Expire every hold of the schedule whose deadline passed (deadline <= now).
local function reap(meta_key, taken_key, deadlines_key, legs, now, limit)
  local due
  if limit then
    due = redis.call('ZRANGEBYSCORE', deadlines_key, '-inf', now, 'LIMIT', 0, limit)
  else
    due = redis.call('ZRANGEBYSCORE', deadlines_key, '-inf', now)
  end
  if #due == 0 then return 0 end
  local entries = {}
  for _, o in ipairs(live_among(meta_key, due)) do
    local hk, hid, h = o[1], o[2], o[3]
    entries[#entries + 1] = seat_legs(h)
    redis.call('HSET', hk, 'st', 'expired')
    untrack(meta_key, h, hid)
    note_text(h[2], h[3], h[4])
  end
  for i = 1, #due, 1000 do
    redis.call('ZREM', deadlines_key, unpack(due, i, math.min(#due, i + 999)))
  end
  bits_write(taken_key, entries, legs, 0)
  if #entries > 0 then
    local prefix = string.match(meta_key, '^(.*):{s:') or ''  -- "<prefix>:{s:<id>}:meta"
    EXPIRED_TOTAL[prefix] = (EXPIRED_TOTAL[prefix] or 0) + #entries
  end
  return #entries
end

-- The schedule's live holds split by a predicate taking (leg, seat): those that hold any
-- seat-leg it is true for, and the rest; each {hk, hid, h} (one read of every live hold).
local function live_holds_split(meta_key, deadlines_key, taken)
  local hits, rest = {}, {}
  for _, o in ipairs(live_among(meta_key, redis.call('ZRANGE', deadlines_key, '0', '-1'))) do
    local e = seat_legs(o[3])
    local hit = false
    for k = e[1], e[2] - 1 do
      for _, i in ipairs(e[3]) do
        if taken(k, i) then hit = true break end
      end
      if hit then break end
    end
    if hit then hits[#hits + 1] = o else rest[#rest + 1] = o end
  end
  return hits, rest
end

-- After sold seat-legs (`entries`) were written to sold: revoke the live holds on any sold
-- seat-leg (status released; their taken bits cleared), then make taken cover the new sold
-- seat-legs: set them, or with `rebuild` (sold was rewritten wholesale) make taken sold plus the
-- remaining live holds' seat-legs. Returns the holds revoked.
local function after_sold(meta_key, sold_key, taken_key, deadlines_key, legs, entries, rebuild)
  local sold = redis.call('GET', sold_key) or ''
  local others, kept = live_holds_split(meta_key, deadlines_key, function(k, i)
    return bit_at(sold, legs, k, i)
  end)
  for _, o in ipairs(others) do
    end_hold(meta_key, taken_key, deadlines_key, legs, o[1], o[2], o[3], 'released')
  end
  if not rebuild then
    bits_write(taken_key, entries, legs, 1)
    return #others
  end
  redis.call('SET', taken_key, sold)
  local live = {}
  for _, o in ipairs(kept) do live[#live + 1] = seat_legs(o[3]) end
  bits_write(taken_key, live, legs, 1)
  return #others
end
