"""Candidate: granian's native RSGI interface + aiohttp client.

    CHOICE_BACKEND=URL granian --interface rsgi --port P ... granian_rsgi_aiohttp:app
(`python bench/choices/run.py --list` prints the exact command)
"""

import os

import aiohttp
import msgspec

BACKEND = os.environ["CHOICE_BACKEND"]


class App:
    pool: aiohttp.ClientSession

    def __rsgi_init__(self, loop):
        async def start():
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=300)
            self.pool = aiohttp.ClientSession(connector=connector, auto_decompress=False)

        loop.run_until_complete(start())

    def __rsgi_del__(self, loop):
        loop.run_until_complete(self.pool.close())

    async def __rsgi__(self, scope, protocol):
        body = await protocol()
        if body:
            msgspec.json.decode(body)  # parse once (a gateway needs model, stream, ...)
        headers = {"Content-Type": "application/json"} if body else {}
        path = scope.path + (f"?{scope.query_string}" if scope.query_string else "")
        async with self.pool.request(
            scope.method, BACKEND + path, data=body, headers=headers
        ) as up:
            out = [("content-type", up.headers.get("Content-Type", "application/json"))]
            if (length := up.headers.get("Content-Length")) is not None:
                out.append(("content-length", length))
            transport = protocol.response_stream(status=up.status, headers=out)
            async for chunk in up.content.iter_any():
                await transport.send_bytes(chunk)


app = App()
