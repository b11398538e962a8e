-- hold_class: choose and hold `count` seats of one class for legs [a, b); all or nothing.
-- Choice: adjacent seats in one car first (best fit among the first cars that can seat the
-- group: the scan stops at a window reaching the best score possible, or after MAX_CARS cars
-- with a window), then, only when no car can seat the group together, c seats in one car, then
-- anywhere in the class. Strategy 'best' (segment-aware) prefers seats whose legs a-1 and b are
-- already taken (sold or held; a = 0 and b = L count as taken); 'first' takes the lowest
-- indices. Work is per car, on bytes of the taken bitmap (sold or held): a seat group's journey
-- legs are adjacent bytes, OR'ed by one `bit.bor` over one `string.byte` call; no per-seat
-- tables outside the rare fallback. A car's scan stops at a window reaching the best score its
-- neighbours allow.
-- @function
-- KEYS[1] meta: schedule meta hash
-- KEYS[2] taken: taken bitmap (sold or held)
-- KEYS[3] deadlines: zset hold id -> deadline ms
-- KEYS[4] hold: the new hold's hash (prefix .. hold id)
-- KEYS[5] user_holds: the user's live holds zset (hold id -> expires ms)
-- KEYS[6] user_rate: the user's one-minute attempt counter
-- KEYS[7] user_idem: the idempotency record (used only when ARGV[10] == '1')
-- KEYS[8] due: global zset schedule id -> earliest deadline (for the reaper)
-- KEYS[9] channel: the schedule's event channel
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
local a, b, legs = ctx.a, ctx.b, ctx.legs
local MAX_CARS = 3  -- cars with a window the best fit compares before it picks

-- the class's cars (they must tile the class; else the class is one span)
local cars = class_cars(ARGV[14], cs, ce, ARGV[12] .. '/' .. ARGV[13] .. '/' .. ARGV[14])

-- The class's seat groups g0..g1, all legs (zero-padded). Read up to the end of the MAX_CARS-th
-- car first (step 1 rarely looks further: a GETRANGE costs ~11 instructions per byte on top of
-- the call), the rest, from the first car past it, only when that car is scanned: two strings,
-- not one joined (joining ~2 KB made a new Lua string, ~7% of a hold that needed it).
local g0, g1 = (cs - cs % 8) / 8, ((ce - 1) - (ce - 1) % 8) / 8
local last_seat = cars[math.min(#cars, MAX_CARS)][2] - 1
local g_read = (last_seat - last_seat % 8) / 8
local function read(from, to)  -- groups from..to
  local want = (to - from + 1) * legs
  local first = from * legs
  local got = redis.call('GETRANGE', KEYS[2], int_text(first), int_text(first + want - 1))
  return zero_padded(got, want)
end
local head, rest, rest_g0 = read(g0, g_read), nil, nil
-- The bytes holding groups jb..je (a car's, or a window's) and the group they start at: leg k of
-- group j is byte (j - base)*legs + k + 1.
local function bytes_of(jb, je)
  if je <= g_read then return head, g0 end
  if not rest or jb < rest_g0 then rest, rest_g0 = read(jb, g1), jb end
  return rest, rest_g0
end

local bor, byte = bit.bor, string.byte
-- the neighbouring legs a-1 and b: a constant byte (255: taken, a = 0 / b = L; 0: first fit)
-- or read per group
local pv_const, nx_const = 0, 0
if best then
  pv_const, nx_const = 255, 255
  if a > 0 then pv_const = nil end
  if b < legs then nx_const = nil end
end
-- The best score a window can reach, given whether some seat may be taken on leg a-1 (pv_any
-- nonzero) and on leg b (nx_any nonzero): +count per such neighbour leg (an upper bound).
local function car_bound(pv_any, nx_any)
  local bound = 0
  if pv_any ~= 0 then bound = bound + c end
  if nx_any ~= 0 then bound = bound + c end
  return bound
end
-- the best score any window can reach (a neighbour leg read per group may be taken)
local top_score = car_bound(pv_const or 255, nx_const or 255)

-- occ[q], pvb[q], nxb[q]: group jb + q - 1 OR'ed over the journey's legs (a bit is set when its
-- seat is taken on any leg), and its legs a-1 and b; one string.byte call per leg span. Returns
-- the car's bound (car_bound).
local occ, pvb, nxb = {}, {}, {}
local function fill(jb, je)
  local taken, base = bytes_of(jb, je)
  local pv_any, nx_any = 0, 0
  for j = jb, je do
    local p = (j - base) * legs + 1
    local q = j - jb + 1
    occ[q] = bor(byte(taken, p + a, p + b - 1))
    local pv = pv_const or byte(taken, p + a - 1)
    local nx = nx_const or byte(taken, p + b)
    pvb[q], nxb[q] = pv, nx
    pv_any, nx_any = bor(pv_any, pv), bor(nx_any, nx)
  end
  return car_bound(pv_any, nx_any)
end

-- One car [s, e): the first best window of c adjacent free seats (start or nil, score) and the
-- car's free seat count (complete only when no perfect window ended the scan early). A seat's
-- score: +1 if leg a-1 is taken, +1 if leg b is taken; a window's: the sum over its seats.
local sc = {}  -- scores of the current run, by position in the car (reused)
local function scan(s, e)
  local jb, je = (s - s % 8) / 8, ((e - 1) - (e - 1) % 8) / 8
  local car_top = fill(jb, je)
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
            if sum == car_top then return ws, wsc, nfree end
          end
        else
          run, sum = 0, 0
        end
      end
    end
  end
  return ws, wsc, nfree
end

-- Count 1 or 2: the same window as scan (the earliest of the best score), with table lookups per
-- seat group instead of a per-seat loop or per-seat bit operations (each `bit` or `string`
-- function is a C call, ~1k instructions with its arguments; a table lookup is a few dozen).
-- A first pass over the car's bytes of legs a-1 and b gives the car's bound (so the scan stops
-- at the first window reaching it) and keeps them per group for the second; the second reads
-- each group's journey legs (one `string.byte` and one `bit.bor` call) and looks its
-- seats up as one base-4 number, a digit per seat: 0 taken, 1 + its score when free (the score:
-- +1 per neighbouring leg taken). NIB_* tables answer per half group (4 seats, 256 states).
local band, lshift, rshift = bit.band, bit.lshift, bit.rshift
local function scan_bytes(s, e)
  local jb, je = (s - s % 8) / 8, ((e - 1) - (e - 1) % 8) / 8
  local taken, base = bytes_of(jb, je)
  -- pass 1: the best score the car allows, from its groups' bytes of legs a-1 and b; it stops
  -- once the bound is the best score of any window (in a loaded train, within the first groups)
  local pv_any, nx_any = pv_const, nx_const
  local kept = je  -- pvb and nxb (fill's tables, reused) hold groups jb..kept
  if not pv_any or not nx_any then
    local pa, na = pv_any or 0, nx_any or 0
    for j = jb, je do
      local p, q = (j - base) * legs + 1, j - jb + 1
      if not pv_any then
        local v = byte(taken, p + a - 1)
        pvb[q], pa = v, pa + v
      end
      if not nx_any then
        local v = byte(taken, p + b)
        nxb[q], na = v, na + v
      end
      if pa ~= 0 and na ~= 0 then
        kept = j
        break
      end
    end
    pv_any, nx_any = pa, na
  end
  local car_top = car_bound(pv_any, nx_any)
  -- pass 2: the windows, group by group
  local nfree, ws, wsc = 0, nil, -1
  local last = 0  -- the digit of seat 7 of the previous group (0: taken or no group)
  for j = jb, je do
    local p, q = (j - base) * legs + 1, j - jb + 1
    local f = 255 - bor(byte(taken, p + a, p + b - 1))
    if j == jb or j == je then  -- the car's seats only
      local m = 255
      if j == jb then m = rshift(255, s - 8 * j) end
      if j == je then m = band(m, lshift(255, 8 - (e - 8 * j))) end
      f = band(f, m)
    end
    if f == 0 then
      last = 0
    else
      nfree = nfree + POPCOUNT[f]
      local pv, nx = pv_const, nx_const
      if j <= kept then
        pv, nx = pv or pvb[q], nx or nxb[q]
      else
        pv = pv or byte(taken, p + a - 1)
        nx = nx or byte(taken, p + b)
      end
      local u, w = f, f  -- free seats whose leg a-1 (u), leg b (w) is taken
      if pv == 0 then u = 0 elseif pv ~= 255 then u = band(f, pv) end
      if nx == 0 then w = 0 elseif nx ~= 255 then w = band(f, nx) end
      local d = DIGITS[f] + DIGITS[u] + DIGITS[w]
      local lo = d % 256
      local hi = (d - lo) / 256
      local key  -- level * 8 + 7 - the window's first seat in the group: the max is the pick
      if c == 1 then
        key = NIB_SEAT_HI[hi]
        local k2 = NIB_SEAT_LO[lo]
        if k2 > key then key = k2 end
      else
        local first = (hi - hi % 64) / 64
        if last > 0 and first > 0 then  -- the pair from seat 8j - 1
          local v = last + first - 2
          if v > wsc then
            ws, wsc = 8 * j - 1, v
            if v == car_top then return ws, wsc, nfree end
          end
        end
        key = NIB_PAIR_HI[hi]
        local k2 = NIB_PAIR_LO[lo]
        if k2 > key then key = k2 end
        local d3, d4 = hi % 4, (lo - lo % 64) / 64  -- seats 3 and 4
        if d3 > 0 and d4 > 0 then
          k2 = (d3 + d4 - 2) * 8 + 4
          if k2 > key then key = k2 end
        end
        last = lo % 4
      end
      if key >= 0 then
        local lvl = (key - key % 8) / 8
        if lvl > wsc then
          ws, wsc = 8 * j + 7 - key % 8, lvl
          if lvl == car_top then return ws, wsc, nfree end
        end
      end
    end
  end
  return ws, wsc, nfree
end
local scan_car = scan
if c <= 2 then scan_car = scan_bytes end

-- 1. c adjacent free seats in one car: the best window among the first MAX_CARS cars that have
-- one, stopping at once at a window with the best possible score
local pick, pick_score, seen, nfree = nil, -1, 0, 0
for _, car in ipairs(cars) do
  local ws, wsc, nf = scan_car(car[1], car[2])
  nfree = nfree + nf
  if ws then
    seen = seen + 1
    if wsc > pick_score then pick, pick_score = ws, wsc end
    if pick_score == top_score or seen == MAX_CARS then break end
  end
end
-- without any window every car was scanned: nfree is the class's exact free count
if not pick and nfree < c then return hold_done({INSUFFICIENT_INVENTORY, nfree}) end

local seats, span, span_g0
if pick then
  seats = {}
  for i = pick, pick + c - 1 do seats[#seats + 1] = i end
  local last = pick + c - 1
  span, span_g0 = bytes_of((pick - pick % 8) / 8, (last - last % 8) / 8)
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
  span, span_g0 = read(g0, g1), g0  -- the seats may be in any cars
end
return hold_commit(ctx, seats, span, span_g0 * legs)
