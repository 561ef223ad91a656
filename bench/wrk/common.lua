-- Shared body of the wrk scripts (chat.lua, generate.lua, openai_chat.lua).
--
-- The calling script sets the global `bench = {dir=..., path=..., body_file=...}`
-- and then runs this file. Knobs come from the environment, so the runner can use
-- one script for every scenario:
--   BENCH_STREAM=1    send "stream":true (the runner also points the target at the
--                     streaming backend; the body is what the gateway sees)
--   BENCH_RATE=R      paced mode: hold R requests/s in total (see delay() below)
--   BENCH_THREADS=T   wrk's -t, so the rate can be split across threads (default 1)
--   BENCH_AUTH=KEY    add "Authorization: Bearer KEY" (LiteLLM's master key)
--   BENCH_MODEL=NAME  replace the model name in the body
--   BENCH_CONNS=C     wrk's -c, to undo wrk's latency "correction" (see done())
--
-- done() prints one line `BENCH_JSON {...}` with requests, rate, errors and latency
-- percentiles in microseconds, for bench/overhead.py to parse.

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local body = read_file(bench.dir .. "bodies/" .. bench.body_file)
if os.getenv("BENCH_STREAM") == "1" then
  body = body:gsub('"stream":false', '"stream":true', 1)
end
local model = os.getenv("BENCH_MODEL")
if model and model ~= "" then
  body = body:gsub('"model":"[^"]*"', '"model":"' .. model .. '"', 1)
end

wrk.method = "POST"
wrk.path = bench.path
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "*/*"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

-- Paced mode. wrk calls delay() before every request on every connection and starts
-- the latency clock only when the request is written, so this is a *paced closed
-- loop*: each thread hands out send slots `interval` ms apart, a connection waits for
-- the next free slot, and at most one request per connection is in flight. It holds
-- the offered rate as long as the target keeps up with the connections it has; it is
-- not wrk2's open loop (no coordinated-omission correction), so a stall shows up as a
-- lower achieved rate (reported) rather than as queueing delay.
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
    int clock_gettime(int clk_id, bench_timespec_t *tp);
  ]])
  local ts = ffi.new("bench_timespec_t")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local threads = tonumber(os.getenv("BENCH_THREADS") or "1") or 1
  local interval = 1000 * threads / rate
  local next_slot = nil
  function delay()
    local now = now_ms()
    if next_slot == nil then
      next_slot = now
    else
      -- Catch up at most 10 ms of missed slots; never burst after a long stall.
      next_slot = math.max(next_slot + interval, now - 10)
    end
    local wait = next_slot - now
    if wait <= 0 then
      return 0
    end
    return math.floor(wait) -- wrk takes whole ms; the slot grid keeps the mean rate exact
  end
end

-- wrk 4 "corrects" its latency histogram for coordinated omission before done() runs:
-- every sample longer than twice the mean per-connection interval (duration divided
-- by requests per connection) gets synthetic copies at that value minus 1, 2, ...
-- intervals. With one connection at ~2,000 req/s a single 200 ms stall of the machine
-- then adds ~400 samples and dominates p99. wrk's stats_correct() only adds counts to
-- lower buckets from higher ones, so walking the buckets from the top and taking
-- those copies back out restores the measured histogram exactly. We report the
-- measured per-request latencies ("latency_us") and keep wrk's ("latency_co_us").
local function measured_histogram(summary, latency)
  local hist, values = {}, {}
  for i = 1, #latency do
    local value, count = latency(i)
    hist[value] = count
    values[#values + 1] = value
  end
  local conns = tonumber(os.getenv("BENCH_CONNS") or "0") or 0
  local per_conn = conns > 0 and math.floor(summary.requests / conns) or 0
  if per_conn > 0 then
    local expected = math.floor(summary.duration / per_conn)
    table.sort(values, function(a, b) return a > b end)
    for _, n in ipairs(values) do
      local count = hist[n]
      if n < 2 * expected then
        break
      end
      local m = n - expected
      while count > 0 and m > expected do
        hist[m] = hist[m] - count
        m = m - expected
      end
    end
  end
  table.sort(values)
  return hist, values
end

local function stats_of(hist, values)
  local total, sum, sumsq, lo, hi = 0, 0, 0, nil, 0
  for _, v in ipairs(values) do
    local c = hist[v]
    if c > 0 then
      total, sum, sumsq = total + c, sum + c * v, sumsq + c * v * v
      lo = lo or v
      hi = v
    end
  end
  local function percentile(p) -- the same rank rule as wrk's stats_percentile()
    local rank = math.floor((p / 100) * total + 0.5)
    local seen = 0
    for _, v in ipairs(values) do
      seen = seen + hist[v]
      if seen >= rank then
        return v
      end
    end
    return 0
  end
  local mean = total > 0 and sum / total or 0
  local stdev = total > 1 and math.sqrt(math.max(0, (sumsq - total * mean * mean) / (total - 1))) or 0
  return string.format(
    '{"count":%d,"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
      .. '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99.9":%d}',
    total, lo or 0, mean, stdev, hi,
    percentile(50), percentile(75), percentile(90), percentile(99), percentile(99.9)
  )
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local hist, values = measured_histogram(summary, latency)
  local out = string.format(
    '{"requests":%d,"duration_s":%.3f,"rps":%.1f,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":%s,'
      .. '"latency_co_us":{"mean":%.1f,"p50":%d,"p99":%d,"p99.9":%d,"max":%d},'
      .. '"paced_rate":%.1f}',
    summary.requests, secs, summary.requests / secs, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    stats_of(hist, values),
    latency.mean, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, rate
  )
  io.write("BENCH_JSON " .. out .. "\n")
end
