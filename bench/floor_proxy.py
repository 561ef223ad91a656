"""The floor under a Python gateway on the streaming rig: Corral's own lean parts, no gateway.

    python bench/floor_proxy.py --port P --backend http://127.0.0.1:N

One uvicorn process (httptools, uvloop) with a raw ASGI app that reads the request body,
decodes it once (msgspec), sends it to the one backend over Corral's pooled keep-alive
client (`corral.adapters.rawstream.RawPool`), and relays the answer with the same
direct writes Corral's pass-through uses (`RawResponse.pipe` into `DirectBody`). No
routing, scheduling, limits, metering, usage record, watchdog or disconnect watch.

`bench/streams_ab.py --trees new=.,floor=floor` runs it in Corral's place. Its cost per
chunk is what uvicorn, uvloop and the interpreter take on this machine before any of
Corral's own work; Corral's figure minus this one is what the gateway itself costs.
Pass-through only (cases a and b): it forwards the client's path and body as they are.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import uvicorn

from corral.adapters.rawstream import RawPool
from corral.app.asgi import direct_body, read_body

_HEADERS = {"Content-Type": "application/json"}
_MAX_BODY = 32 * 1024 * 1024


def make_app(backend: str) -> Any:
    pool: RawPool | None = None

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal pool
        if scope["type"] == "lifespan":
            await receive()
            pool = RawPool(backend, connect_timeout=5.0)
            await send({"type": "lifespan.startup.complete"})
            await receive()
            pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert pool is not None
        body = await read_body(scope, receive, _MAX_BODY)  # as Corral's pipelines read it
        if body:
            msgspec.json.decode(body)  # a gateway reads the request at least once
        conn = await pool.connect()
        resp = await pool.request(conn, scope["method"], scope["path"], body, _HEADERS)
        start = {"type": "http.response.start", "status": resp.status}
        await send({**start, "headers": [(b"content-type", resp.content_type.encode())]})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        out = direct_body(send)
        if out is None:  # not uvicorn's chunked send: one awaited send a piece
            async for piece in resp.chunks():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        else:
            while not await resp.pipe(out.write):
                await out.drain()
        resp.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", required=True, help="http://host:port of the one backend")
    args = ap.parse_args()
    uvicorn.run(
        make_app(args.backend),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
