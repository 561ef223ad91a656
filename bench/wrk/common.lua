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

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local out = string.format(
    '{"requests":%d,"duration_s":%.3f,"rps":%.1f,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
      .. '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99.9":%d},"paced_rate":%.1f}',
    summary.requests, secs, summary.requests / secs, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), rate
  )
  io.write("BENCH_JSON " .. out .. "\n")
end
