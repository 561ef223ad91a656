"""Candidate: aiohttp.web server + aiohttp client (on uvloop, like the uvicorn ones).

python bench/choices/aiohttp_web.py --port P --backend URL
"""

import argparse

import aiohttp
import msgspec
import uvloop
from aiohttp import web

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--backend", required=True)
args = ap.parse_args()


async def pool_ctx(app):
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=300)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as pool:
        app["pool"] = pool
        yield


async def proxy(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if body:
        msgspec.json.decode(body)  # parse once (a gateway needs model, stream, ...)
    headers = {"Content-Type": "application/json"} if body else {}
    url = args.backend + request.raw_path
    async with request.app["pool"].request(request.method, url, data=body, headers=headers) as up:
        resp = web.StreamResponse(status=up.status)
        resp.content_type = up.content_type
        if up.content_length is not None:
            resp.content_length = up.content_length
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
    await resp.write_eof()
    return resp


app = web.Application()
app.cleanup_ctx.append(pool_ctx)
app.router.add_route("*", "/{path:.*}", proxy)
web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
            loop=uvloop.new_event_loop())  # fmt: skip
