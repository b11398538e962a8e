-- hold_class: choose and hold `count` seats of one class for legs [a, b); all or nothing.
-- Choice: adjacent seats in one car first (best fit among the first cars that can seat the
-- group: the scan stops at a window reaching the best score possible, or after MAX_CARS cars
-- with a window), then, only when no car can seat the group together, c seats in one car, then
-- anywhere in the class. Strategy 'best' (segment-aware) prefers seats whose legs a-1 and b are
-- already taken (sold or held; a = 0 and b = L count as taken); 'first' takes the lowest
-- indices. Work is per car, on bytes: the car's few bytes of each journey row are OR'ed with
-- `bit.bor`, eight bytes and four rows at a time; no per-seat tables outside the rare fallback.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] sold: sold bitmap
-- KEYS[3] held: held bitmap
-- KEYS[4] deadlines: zset hold id -> deadline ms
-- KEYS[5] hold: the new hold's hash (prefix .. hold id)
-- KEYS[6] user_holds: the user's live holds zset (hold id -> expires ms)
-- KEYS[7] user_rate: the user's one-minute attempt counter
-- KEYS[8] user_idem: the idempotency record (used only when ARGV[10] == '1')
-- KEYS[9] due: global zset schedule id -> earliest deadline (for the reaper)
-- KEYS[10] channel: the schedule's event channel
-- ARGV[1] lid: layout id the class span refers to
-- ARGV[2] hold_id
-- ARGV[3] user
-- ARGV[4] schedule_id
-- ARGV[5] a: first leg
-- ARGV[6] b: end leg (exclusive)
-- ARGV[7] ttl_ms
-- ARGV[8] max_active: live-hold limit per user (0 = off)
-- ARGV[9] rate_per_min: attempts per user per minute (0 = off)
-- ARGV[10] idem: '1' when an idempotency key is given
-- ARGV[11] body_hash: the request's hash for the idempotency record
-- ARGV[12] class_start: first seat index of the class
-- ARGV[13] class_end: end seat index of the class (exclusive; equal to start: no such class)
-- ARGV[14] cars: comma list "start:end" of the class's car spans
-- ARGV[15] count
-- ARGV[16] strategy: 'best' or 'first'
-- Returns: {OK, replayed, hold_id, user, a, b, seats, status, expires_ms, created_ms, booking}
--   | {INSUFFICIENT_INVENTORY, available} | {RATE_LIMITED, retry_after_ms}
--   | {IDEMPOTENCY_CONFLICT | SCHEDULE_NOT_FOUND | LAYOUT_MISMATCH | INVALID_ARGUMENT
--      | SALE_CLOSED | HOLD_LIMIT}

-- @include lib/codes.lua
-- @include lib/common.lua
-- @include lib/hold.lua

local early, ctx = hold_begin()
if early then return early end

local cs, ce, c = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[15])
if not cs or not ce or not c or c < 1 or cs < 0 or ce > ctx.n or cs > ce then
  return hold_done({INVALID_ARGUMENT})
end
if cs == ce then return hold_done({INSUFFICIENT_INVENTORY, 0}) end
local best = ARGV[16] ~= 'first'
local a, b, rb, legs = ctx.a, ctx.b, ctx.rb, ctx.legs
local MAX_CARS = 3  -- cars with a window the best fit compares before it picks

-- Rows lo..hi (legs of the journey, plus its neighbours for best fit), one GETRANGE per bitmap;
-- padded with zero bytes so that eight-byte reads never run past the end.
local lo, hi = a, b - 1
if best then
  if a > 0 then lo = a - 1 end
  if b < legs then hi = b end
end
local held_rows = redis.call('GETRANGE', KEYS[3], lo * rb, (hi + 1) * rb - 1)
local sold = redis.call('GETRANGE', KEYS[2], lo * rb, (hi + 1) * rb - 1)
local want = (hi - lo + 1) * rb + 8
local held = held_rows
if #sold < want then sold = sold .. string.rep('\0', want - #sold) end
if #held < want then held = held .. string.rep('\0', want - #held) end

local band, bor, byte = bit.band, bit.bor, string.byte
local nrow = b - a
local row_a = (a - lo) * rb  -- offset (0-based) of row a in sold/held
-- the neighbouring legs: a constant byte (255: taken, a = 0 / b = L; 0: first fit) or a row read
local pv_const, nx_const = 0, 0
if best then
  pv_const, nx_const = 255, 255
  if a > lo then pv_const = nil end
  if b <= hi then nx_const = nil end
end
local row_n = (b - lo) * rb

-- The best score a seat can reach (an upper bound): 2 when both neighbouring legs may be taken,
-- 1 when one may, 0 when both neighbour rows are free over the class's bytes (early in a sale:
-- then the first window found is already the best and the scan stops there).
local seat_max = 0
if best then
  local jb, je = (cs - cs % 8) / 8, ((ce - 1) - (ce - 1) % 8) / 8
  local zeros = string.rep('\0', je - jb + 1)
  local function taken(k)  -- leg k may hold a taken seat of the class (outside: taken)
    if k < 0 or k >= legs then return true end
    local p = (k - lo) * rb + jb + 1
    local q = p + je - jb
    return string.sub(sold, p, q) ~= zeros or string.sub(held, p, q) ~= zeros
  end
  if taken(a - 1) then seat_max = seat_max + 1 end
  if taken(b) then seat_max = seat_max + 1 end
end
local top_score = seat_max * c

-- occ[q], pvb[q], nxb[q]: byte jb + q - 1 of a car's span, OR'ed over the journey's rows (taken
-- on any leg), and of legs a-1 and b. Eight bytes per string.byte call, both bitmaps per bor.
local occ, pvb, nxb = {}, {}, {}
local function neighbour(t, const, row, jb, w)
  if const then
    for q = 1, w do t[q] = const end
    return
  end
  for q0 = 0, w - 1, 8 do
    local p = row + jb + q0 + 1
    local s1, s2, s3, s4, s5, s6, s7, s8 = byte(sold, p, p + 7)
    local h1, h2, h3, h4, h5, h6, h7, h8 = byte(held, p, p + 7)
    t[q0 + 1], t[q0 + 2], t[q0 + 3], t[q0 + 4] = bor(s1, h1), bor(s2, h2), bor(s3, h3), bor(s4, h4)
    t[q0 + 5], t[q0 + 6], t[q0 + 7], t[q0 + 8] = bor(s5, h5), bor(s6, h6), bor(s7, h7), bor(s8, h8)
  end
end
local function fill(jb, je)
  local w = je - jb + 1
  for q0 = 0, w - 1, 8 do
    local p = row_a + jb + q0 + 1
    local o1, o2, o3, o4, o5, o6, o7, o8 = 0, 0, 0, 0, 0, 0, 0, 0
    local left = nrow
    -- four rows per step: 8 string.byte calls and 8 bor calls (of 9 values each)
    while left >= 4 do
      local s1, s2, s3, s4, s5, s6, s7, s8 = byte(sold, p, p + 7)
      local h1, h2, h3, h4, h5, h6, h7, h8 = byte(held, p, p + 7)
      local t1, t2, t3, t4, t5, t6, t7, t8 = byte(sold, p + rb, p + rb + 7)
      local u1, u2, u3, u4, u5, u6, u7, u8 = byte(held, p + rb, p + rb + 7)
      local v1, v2, v3, v4, v5, v6, v7, v8 = byte(sold, p + 2 * rb, p + 2 * rb + 7)
      local x1, x2, x3, x4, x5, x6, x7, x8 = byte(held, p + 2 * rb, p + 2 * rb + 7)
      local y1, y2, y3, y4, y5, y6, y7, y8 = byte(sold, p + 3 * rb, p + 3 * rb + 7)
      local z1, z2, z3, z4, z5, z6, z7, z8 = byte(held, p + 3 * rb, p + 3 * rb + 7)
      o1 = bor(o1, s1, h1, t1, u1, v1, x1, y1, z1)
      o2 = bor(o2, s2, h2, t2, u2, v2, x2, y2, z2)
      o3 = bor(o3, s3, h3, t3, u3, v3, x3, y3, z3)
      o4 = bor(o4, s4, h4, t4, u4, v4, x4, y4, z4)
      o5 = bor(o5, s5, h5, t5, u5, v5, x5, y5, z5)
      o6 = bor(o6, s6, h6, t6, u6, v6, x6, y6, z6)
      o7 = bor(o7, s7, h7, t7, u7, v7, x7, y7, z7)
      o8 = bor(o8, s8, h8, t8, u8, v8, x8, y8, z8)
      p, left = p + 4 * rb, left - 4
      if left > 0 and band(o1, o2, o3, o4, o5, o6, o7, o8) == 255 then left = 0 end  -- all taken
    end
    for _ = 1, left do
      local s1, s2, s3, s4, s5, s6, s7, s8 = byte(sold, p, p + 7)
      local h1, h2, h3, h4, h5, h6, h7, h8 = byte(held, p, p + 7)
      o1, o2, o3, o4 = bor(o1, s1, h1), bor(o2, s2, h2), bor(o3, s3, h3), bor(o4, s4, h4)
      o5, o6, o7, o8 = bor(o5, s5, h5), bor(o6, s6, h6), bor(o7, s7, h7), bor(o8, s8, h8)
      p = p + rb
    end
    occ[q0 + 1], occ[q0 + 2], occ[q0 + 3], occ[q0 + 4] = o1, o2, o3, o4
    occ[q0 + 5], occ[q0 + 6], occ[q0 + 7], occ[q0 + 8] = o5, o6, o7, o8
  end
  neighbour(pvb, pv_const, 0, jb, w)
  neighbour(nxb, nx_const, row_n, jb, w)
end

-- One car [s, e): the first best window of c adjacent free seats (start or nil, score) and the
-- car's free seat count (complete only when no perfect window ended the scan early). A seat's
-- score: +1 if leg a-1 is taken, +1 if leg b is taken; a window's: the sum over its seats.
local sc = {}  -- scores of the current run, by position in the car (reused)
local function scan(s, e)
  local jb, je = (s - s % 8) / 8, ((e - 1) - (e - 1) % 8) / 8
  fill(jb, je)
  local run, sum, nfree = 0, 0, 0
  local ws, wsc = nil, -1
  for q = 1, je - jb + 1 do
    local o = occ[q]
    if o == 255 then
      run, sum = 0, 0
    else
      local ob, pb, xb = SEAT_BITS[o], SEAT_BITS[pvb[q]], SEAT_BITS[nxb[q]]
      local base = (jb + q - 1) * 8
      local i0, i1 = base, base + 7
      if i0 < s then i0 = s end
      if i1 >= e then i1 = e - 1 end
      for i = i0, i1 do
        local k = i - base + 1
        if ob[k] == 0 then
          local v = pb[k] + xb[k]
          nfree = nfree + 1
          sc[i - s] = v
          run, sum = run + 1, sum + v
          if run > c then
            sum = sum - sc[i - s - c]
            run = c
          end
          if run == c and sum > wsc then
            ws, wsc = i - c + 1, sum
            if sum == top_score then return ws, wsc, nfree end
          end
        else
          run, sum = 0, 0
        end
      end
    end
  end
  return ws, wsc, nfree
end

local cars = {}
local tiled = cs
for s, e in string.gmatch(ARGV[14], '(%d+):(%d+)') do
  s, e = math.max(tonumber(s), cs), math.min(tonumber(e), ce)
  if s ~= tiled or e <= s then tiled = -1 break end
  cars[#cars + 1] = {s, e}
  tiled = e
end
if tiled ~= ce then cars = {{cs, ce}} end  -- the cars must tile the class; else one span

-- 1. c adjacent free seats in one car: the best window among the first MAX_CARS cars that have
-- one, stopping at once at a window with the best possible score
local pick, pick_score, seen, nfree = nil, -1, 0, 0
for _, car in ipairs(cars) do
  local ws, wsc, nf = scan(car[1], car[2])
  nfree = nfree + nf
  if ws then
    seen = seen + 1
    if wsc > pick_score then pick, pick_score = ws, wsc end
    if pick_score == top_score or seen == MAX_CARS then break end
  end
end
-- without any window every car was scanned: nfree is the class's exact free count
if not pick and nfree < c then return hold_done({INSUFFICIENT_INVENTORY, nfree}) end

local seats
if pick then
  seats = {}
  for i = pick, pick + c - 1 do seats[#seats + 1] = i end
else
  -- the rare fallback (no car can seat the group together): free seats per car by score
  -- (buckets 1, 2, 3 = score 2, 1, 0; each in index order)
  local all = {{}, {}, {}}
  local best_sum = -1
  for _, car in ipairs(cars) do
    local s, e = car[1], car[2]
    local jb, je = (s - s % 8) / 8, ((e - 1) - (e - 1) % 8) / 8
    fill(jb, je)
    local bk = {{}, {}, {}}
    for i = s, e - 1 do
      local q, k = (i - i % 8) / 8 - jb + 1, i % 8 + 1
      if SEAT_BITS[occ[q]][k] == 0 then
        local t = bk[3 - SEAT_BITS[pvb[q]][k] - SEAT_BITS[nxb[q]][k]]
        t[#t + 1] = i
      end
    end
    -- 2. c seats in one car: the car whose best c seats score highest (first on ties)
    local out, sum = {}, 0
    for q = 1, 3 do
      local t, u = bk[q], all[q]
      for _, i in ipairs(t) do
        if #out < c then
          out[#out + 1] = i
          sum = sum + 3 - q
        end
        u[#u + 1] = i
      end
    end
    if #out == c and sum > best_sum then seats, best_sum = out, sum end
  end
  if not seats then
    -- 3. the best c seats of the class
    seats = {}
    for q = 1, 3 do
      for _, i in ipairs(all[q]) do
        if #seats == c then break end
        seats[#seats + 1] = i
      end
    end
  end
  table.sort(seats)
end
return hold_commit(ctx, seats, held_rows, lo)
