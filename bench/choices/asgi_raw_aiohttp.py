"""Candidate: raw ASGI app + aiohttp client, served by uvicorn (httptools + uvloop).

    python bench/choices/asgi_raw_aiohttp.py --port P --backend URL [--watch-disconnect]

The same `app` also runs under granian (`run.py --list` prints the command); the
backend URL then comes from CHOICE_BACKEND.
"""

import argparse
import asyncio
import os

import aiohttp
import msgspec

BACKEND = os.environ.get("CHOICE_BACKEND", "")
WATCH = os.environ.get("CHOICE_WATCH_DISCONNECT") == "1"
pool: aiohttp.ClientSession


async def relay(scope, send, body):
    if body:
        msgspec.json.decode(body)  # parse once (a gateway needs model, stream, ...)
    headers = {"Content-Type": "application/json"} if body else {}
    url = BACKEND + scope["raw_path"].decode()
    async with pool.request(scope["method"], url, data=body, headers=headers) as up:
        out = [(b"content-type", up.headers.get("Content-Type", "application/json").encode())]
        if (length := up.headers.get("Content-Length")) is not None:
            out.append((b"content-length", length.encode()))
        await send({"type": "http.response.start", "status": up.status, "headers": out})
        async for chunk in up.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def app(scope, receive, send):
    global pool
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=300)
            pool = aiohttp.ClientSession(connector=connector, auto_decompress=False)
            await send({"type": "lifespan.startup.complete"})
        await pool.close()
        return await send({"type": "lifespan.shutdown.complete"})
    chunks, more = [], True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    if not WATCH:
        return await relay(scope, send, b"".join(chunks))
    # What a gateway must also do: cancel the upstream call when the client leaves.
    work = asyncio.ensure_future(relay(scope, send, b"".join(chunks)))
    watch = asyncio.ensure_future(receive())  # only http.disconnect can arrive now
    await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    for task in (work, watch):
        task.cancel()


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--watch-disconnect", action="store_true")
    args = ap.parse_args()
    BACKEND, WATCH = args.backend, args.watch_disconnect
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)  # fmt: skip
