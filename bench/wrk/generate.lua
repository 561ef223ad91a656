-- POST /api/generate with a realistic request body (bodies/ollama_generate.json).
-- Usage: wrk -t1 -c64 -d10s -s bench/wrk/generate.lua http://127.0.0.1:PORT
-- Env knobs (BENCH_STREAM, BENCH_RATE, BENCH_THREADS, BENCH_AUTH, ...): see common.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") or ""
bench = { dir = dir, path = "/api/generate", body_file = "ollama_generate.json" }
dofile(dir .. "common.lua")
