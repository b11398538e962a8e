-- The seat choice of hold_class.lua: `count` seats of one class for legs [a, b).
-- Choice: adjacent seats in one car first (best fit among the first cars that can seat the
-- group: the scan stops at a window reaching the best score possible, or after MAX_CARS cars
-- with a window), then, only when no car can seat the group together, c seats in one car, then
-- anywhere in the class. Strategy 'best' (segment-aware) prefers seats whose legs a-1 and b are
-- already taken (sold or held; a = 0 and b = L count as taken); 'first' takes the lowest
-- indices. Work is per car, on bytes of the taken bitmap (sold or held): a seat group's journey
-- legs are adjacent bytes, OR'ed by one `bit.bor` over one `string.byte` call; no per-seat
-- tables outside the rare fallback. A car's scan stops at a window reaching the best score its
-- neighbours allow.
--
-- Everything here is made once, when the library loads: functions defined in a script's body are
-- new closures on every call, with an upvalue each for the call's state. Made here, with the car
-- list kept by its text, a loaded class hold went from 460.7k to 431.4k instructions
-- (docs/PERFORMANCE.md, "Seventh pass"). One call's state lives in the locals of the `do` block
-- below instead, set by choose_seats; a script runs alone, so no two calls share them at once.

-- Seat states as base-4 digits (parties of 1 and 2): DIGITS[v] spreads the bits of byte v to one
-- digit each, seat 0 (the most significant bit) the most significant digit, so
-- DIGITS[f] + DIGITS[u] + DIGITS[w] (u, w subsets of f) gives each seat 0 (taken) or 1 + its
-- score. Its two base-256 halves are the states of seats 0-3 and 4-7, looked up in NIB_*: the
-- best single seat and the best pair starting in that half, as level * 8 + 7 - the first seat's
-- position in the group (higher is better: the best level, then the earliest), -1 for none.
local DIGITS = {}
for v = 0, 255 do
  local d, x, p = 0, v, 1
  for _ = 1, 8 do
    d = d + (x % 2) * p
    x, p = (x - x % 2) / 2, p * 4
  end
  DIGITS[v] = d
end
local NIB_SEAT_HI, NIB_SEAT_LO, NIB_PAIR_HI, NIB_PAIR_LO = {}, {}, {}, {}
for n = 0, 255 do
  local t = {(n - n % 64) / 64, ((n - n % 16) / 16) % 4, ((n - n % 4) / 4) % 4, n % 4}
  local seat, pair = -1, -1
  for r = 1, 4 do
    -- (no math.max: library-level code may not read globals while Redis 7.0 loads it)
    if t[r] > 0 and (t[r] - 1) * 8 + 4 - r > seat then seat = (t[r] - 1) * 8 + 4 - r end
    if r < 4 and t[r] > 0 and t[r + 1] > 0 and (t[r] + t[r + 1] - 2) * 8 + 4 - r > pair then
      pair = (t[r] + t[r + 1] - 2) * 8 + 4 - r
    end
  end
  -- the halves' positions: seats 0-3 (+4 on the key's position part) and 4-7
  NIB_SEAT_HI[n], NIB_PAIR_HI[n] = seat < 0 and -1 or seat + 4, pair < 0 and -1 or pair + 4
  NIB_SEAT_LO[n], NIB_PAIR_LO[n] = seat, pair
end

-- The bits of each byte value, most significant first: SEAT_BITS[v][q] is 1 when bit q (1..8,
-- seat 8*j + q - 1 of byte j) is set, else 0. Lets per-seat loops read bits without C calls.
local SEAT_BITS = {}
for v = 0, 255 do
  local t, x = {}, v
  for q = 8, 1, -1 do
    t[q] = x % 2
    x = (x - x % 2) / 2
  end
  SEAT_BITS[v] = t
end

-- The car spans of a class [cs, ce) from the layout's text "start:end,..." (ARGV of hold_class),
-- clamped to the class; when they do not tile it, the class as one span. Kept at library level
-- by the text (checked against cs, ce: a few layouts x classes, dropped wholesale past
-- CLASS_CARS_MAX entries), so a class hold neither parses the text nor builds the list per call.
local CLASS_CARS, class_cars_n, CLASS_CARS_MAX = {}, 0, 512
local function class_cars(text, cs, ce)
  local kept = CLASS_CARS[text]
  if kept and kept[1] == cs and kept[2] == ce then return kept[3] end
  local cars = {}
  local tiled = cs
  for s, e in string.gmatch(text, '(%d+):(%d+)') do
    s, e = math.max(tonumber(s), cs), math.min(tonumber(e), ce)
    if s ~= tiled or e <= s then tiled = -1 break end
    cars[#cars + 1] = {s, e}
    tiled = e
  end
  if tiled ~= ce then cars = {{cs, ce}} end
  if class_cars_n >= CLASS_CARS_MAX then CLASS_CARS, class_cars_n = {}, 0 end
  CLASS_CARS[text], class_cars_n = {cs, ce, cars}, class_cars_n + 1
  return cars
end

local MAX_CARS = 3  -- cars with a window the best fit compares before it picks

local choose_seats
do
  -- `bit` and `string` functions (globals: read at call time, not while the library loads)
  local bor, band, lshift, rshift, byte
  -- the call: taken bitmap key, journey legs [a, b), legs per seat group, party size
  local taken_key, a, b, legs, c
  -- the class's seat groups g0..g1; `head` holds g0..g_read, `rest` rest_g0..g1 once read
  local g0, g1, g_read, head, rest, rest_g0
  -- the neighbouring legs a-1 and b: a constant byte (255: taken, a = 0 / b = L; 0: first fit)
  -- or nil (read per group)
  local pv_const, nx_const
  -- occ[q], pvb[q], nxb[q]: group jb + q - 1 OR'ed over the journey's legs, its legs a-1 and b;
  -- sc: scores of the current run by position in the car (all reused from call to call)
  local occ, pvb, nxb, sc = {}, {}, {}, {}

  -- Groups from..to of the taken bitmap, all legs (zero-padded).
  local function read(from, to)
    local want = (to - from + 1) * legs
    local first = from * legs
    local got = redis.call('GETRANGE', taken_key, int_text(first), int_text(first + want - 1))
    return zero_padded(got, want)
  end

  -- The bytes holding groups jb..je (a car's, or a window's) and the group they start at: leg k
  -- of group j is byte (j - base)*legs + k + 1. Up to the end of the MAX_CARS-th car is read
  -- first (step 1 rarely looks further: a GETRANGE costs ~11 instructions per byte on top of the
  -- call), the rest, from the first car past it, only when that car is scanned: two strings,
  -- not one joined (joining ~2 KB made a new Lua string, ~7% of a hold that needed it).
  local function bytes_of(jb, je)
    if je <= g_read then return head, g0 end
    if not rest or jb < rest_g0 then rest, rest_g0 = read(jb, g1), jb end
    return rest, rest_g0
  end

  -- The best score a window can reach, given whether some seat may be taken on leg a-1 (pv_any
  -- nonzero) and on leg b (nx_any nonzero): +count per such neighbour leg (an upper bound).
  local function car_bound(pv_any, nx_any)
    local bound = 0
    if pv_any ~= 0 then bound = bound + c end
    if nx_any ~= 0 then bound = bound + c end
    return bound
  end

  -- occ, pvb, nxb for groups jb..je, one string.byte call per leg span. Returns the car's bound.
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

  -- One car [s, e): the first best window of c adjacent free seats (start or nil, score) and
  -- the car's free seat count (complete only when no perfect window ended the scan early). A
  -- seat's score: +1 if leg a-1 is taken, +1 if leg b is taken; a window's: the sum over its
  -- seats.
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

  -- Count 1 or 2: the same window as scan (the earliest of the best score), with table lookups
  -- per seat group instead of a per-seat loop or per-seat bit operations (each `bit` or
  -- `string` function is a C call, ~1k instructions with its arguments; a table lookup is a few
  -- dozen). A first pass over the car's bytes of legs a-1 and b gives the car's bound (so the
  -- scan stops at the first window reaching it) and keeps them per group for the second; the
  -- second reads each group's journey legs (one `string.byte` and one `bit.bor` call) and looks
  -- its seats up as one base-4 number, a digit per seat: 0 taken, 1 + its score when free (the
  -- score: +1 per neighbouring leg taken). NIB_* tables answer per half group (4 seats, 256
  -- states).
  local function scan_bytes(s, e)
    local jb, je = (s - s % 8) / 8, ((e - 1) - (e - 1) % 8) / 8
    local taken, base = bytes_of(jb, je)
    -- pass 1: the best score the car allows, from its groups' bytes of legs a-1 and b; it stops
    -- once the bound is the best score of any window (in a loaded train, within the first
    -- groups)
    local pv_any, nx_any = pv_const, nx_const
    local kept = je  -- pvb and nxb hold groups jb..kept
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

  -- The rare fallback (no car can seat the group together): c seats in one car (the car whose
  -- best c seats score highest, first on ties), else the best c seats of the class. Free seats
  -- per car by score: buckets 1, 2, 3 = score 2, 1, 0, each in index order.
  local function apart(cars)
    local all = {{}, {}, {}}
    local seats, best_sum = nil, -1
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
      seats = {}
      for q = 1, 3 do
        for _, i in ipairs(all[q]) do
          if #seats == c then break end
          seats[#seats + 1] = i
        end
      end
    end
    table.sort(seats)
    return seats
  end

  -- `count` seats of the class [cs, ce) (cars: class_cars) for ctx's legs [a, b), read from the
  -- taken bitmap at `key`. Returns the seats, the taken bytes covering their groups on all legs
  -- and the first of those groups; or nil and the class's free seat count when it cannot seat
  -- `count` (exact: without any window every car was scanned).
  choose_seats = function(key, ctx, cars, cs, ce, count, best)
    bor, band, lshift, rshift, byte = bit.bor, bit.band, bit.lshift, bit.rshift, string.byte
    taken_key, a, b, legs, c = key, ctx.a, ctx.b, ctx.legs, count
    g0, g1 = (cs - cs % 8) / 8, ((ce - 1) - (ce - 1) % 8) / 8
    local last_seat = cars[math.min(#cars, MAX_CARS)][2] - 1
    g_read = (last_seat - last_seat % 8) / 8
    head, rest, rest_g0 = read(g0, g_read), nil, nil
    pv_const, nx_const = 0, 0
    if best then
      pv_const, nx_const = 255, 255
      if a > 0 then pv_const = nil end
      if b < legs then nx_const = nil end
    end
    -- the best score any window can reach (a neighbour leg read per group may be taken)
    local top_score = car_bound(pv_const or 255, nx_const or 255)
    local scan_car = scan
    if c <= 2 then scan_car = scan_bytes end
    -- 1. c adjacent free seats in one car: the best window among the first MAX_CARS cars that
    -- have one, stopping at once at a window with the best possible score
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
    if not pick and nfree < c then return nil, nfree end
    if not pick then return apart(cars), read(g0, g1), g0 end  -- the seats may be in any cars
    local seats = {}
    for i = pick, pick + c - 1 do seats[#seats + 1] = i end
    local last = pick + c - 1
    local span, span_g0 = bytes_of((pick - pick % 8) / 8, (last - last % 8) / 8)
    return seats, span, span_g0
  end
end
