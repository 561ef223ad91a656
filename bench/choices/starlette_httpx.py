"""Candidate: Starlette app + httpx client, served by uvicorn (httptools + uvloop).

python bench/choices/starlette_httpx.py --port P --backend URL
"""

import argparse
import contextlib
import os

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

BACKEND = os.environ.get("CHOICE_BACKEND", "")


@contextlib.asynccontextmanager
async def lifespan(app):
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024)
    async with httpx.AsyncClient(base_url=BACKEND, limits=limits, timeout=300) as pool:
        app.state.pool = pool
        yield


async def proxy(request: Request) -> StreamingResponse:
    body = await request.body()
    if body:
        msgspec.json.decode(body)  # parse once (a gateway needs model, stream, ...)
    headers = {"Content-Type": "application/json"} if body else {}
    pool: httpx.AsyncClient = request.app.state.pool
    req = pool.build_request(request.method, request.url.path, content=body, headers=headers)
    up = await pool.send(req, stream=True)
    out = {"Content-Type": up.headers.get("Content-Type", "application/json")}
    if (length := up.headers.get("Content-Length")) is not None:
        out["Content-Length"] = length
    return StreamingResponse(
        up.aiter_raw(),
        status_code=up.status_code,
        headers=out,
        background=BackgroundTask(up.aclose),
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
