"""Candidate: Starlette app + aiohttp client, served by uvicorn (httptools + uvloop).

python bench/choices/starlette_aiohttp.py --port P --backend URL
"""

import argparse
import contextlib
import os

import aiohttp
import msgspec
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

BACKEND = os.environ.get("CHOICE_BACKEND", "")


@contextlib.asynccontextmanager
async def lifespan(app):
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=300)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as pool:
        app.state.pool = pool
        yield


async def proxy(request: Request) -> StreamingResponse:
    body = await request.body()
    if body:
        msgspec.json.decode(body)  # parse once (a gateway needs model, stream, ...)
    headers = {"Content-Type": "application/json"} if body else {}
    pool: aiohttp.ClientSession = request.app.state.pool
    up = await pool.request(request.method, BACKEND + request.url.path, data=body, headers=headers)
    out = {"Content-Type": up.headers.get("Content-Type", "application/json")}
    if (length := up.headers.get("Content-Length")) is not None:
        out["Content-Length"] = length
    return StreamingResponse(
        up.content.iter_any(),
        status_code=up.status,
        headers=out,
        background=BackgroundTask(up.release),
    )


app = Starlette(routes=[Route("/{path:path}", proxy, methods=["GET", "POST"])], lifespan=lifespan)

if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", required=True)
    args = ap.parse_args()
    BACKEND = args.backend
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)  # fmt: skip
