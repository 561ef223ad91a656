-- POST /api/chat with a realistic request body (bodies/ollama_chat.json).
-- Usage: wrk -t1 -c64 -d10s -s bench/wrk/chat.lua http://127.0.0.1:PORT
-- Env knobs (BENCH_STREAM, BENCH_RATE, BENCH_THREADS, BENCH_AUTH, ...): see common.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") or ""
bench = { dir = dir, path = "/api/chat", body_file = "ollama_chat.json" }
dofile(dir .. "common.lua")
