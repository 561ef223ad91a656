-- POST /v1/chat/completions with a realistic request body (bodies/openai_chat.json).
-- Usage: wrk -t1 -c64 -d10s -s bench/wrk/openai_chat.lua http://127.0.0.1:PORT
-- Env knobs (BENCH_STREAM, BENCH_RATE, BENCH_THREADS, BENCH_AUTH, ...): see common.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") or ""
bench = { dir = dir, path = "/v1/chat/completions", body_file = "openai_chat.json" }
dofile(dir .. "common.lua")
