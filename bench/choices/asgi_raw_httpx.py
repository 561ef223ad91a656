"""Candidate: raw ASGI app + httpx client, served by uvicorn (httptools + uvloop).

python bench/choices/asgi_raw_httpx.py --port P --backend URL
"""

import argparse
import os

import httpx
import msgspec

BACKEND = os.environ.get("CHOICE_BACKEND", "")
pool: httpx.AsyncClient


async def app(scope, receive, send):
    global pool
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024)
            pool = httpx.AsyncClient(base_url=BACKEND, limits=limits, timeout=300)
            await send({"type": "lifespan.startup.complete"})
        await pool.aclose()
        return await send({"type": "lifespan.shutdown.complete"})
    chunks, more = [], True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    body = b"".join(chunks)
    if body:
        msgspec.json.decode(body)  # parse once (a gateway needs model, stream, ...)
    headers = {"Content-Type": "application/json"} if body else {}
    req = pool.build_request(
        scope["method"], scope["raw_path"].decode(), content=body, headers=headers
    )
    up = await pool.send(req, stream=True)
    try:
        out = [(b"content-type", up.headers.get("Content-Type", "application/json").encode())]
        if (length := up.headers.get("Content-Length")) is not None:
            out.append((b"content-length", length.encode()))
        await send({"type": "http.response.start", "status": up.status_code, "headers": out})
        async for chunk in up.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await up.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", required=True)
    args = ap.parse_args()
    BACKEND = args.backend
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)  # fmt: skip
