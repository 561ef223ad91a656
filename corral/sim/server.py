"""The aiohttp application of one simulated Ollama node.

Routes: the inference endpoints (:mod:`corral.sim.infer`, :mod:`corral.sim.embed`),
model management (:mod:`corral.sim.manage`) and the ``/_sim`` control endpoint
(:mod:`corral.sim.control`). One middleware turns :class:`BadRequest` into Ollama's
400, unknown routes into gin's 404, and plays the ``hang`` fault, which swallows
every request but ``/_sim``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from corral.sim import control, embed, infer, manage
from corral.sim.node import RUNTIME, NodeRuntime
from corral.sim.wire import BadRequest, error_response

__all__ = ["make_app"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _ollama_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    if rt.faults.hang and not request.path.startswith("/_sim"):
        rt.counters.errors["hang"] += 1
        await asyncio.Event().wait()  # until the client leaves and aiohttp cancels us
    try:
        return await handler(request)
    except BadRequest as exc:
        rt.counters.errors["bad_request"] += 1
        return error_response(400, str(exc))
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        # Gin's answer for an unknown route or method, which Ollama leaves as is.
        return web.Response(status=404, text="404 page not found")


def make_app(runtime: NodeRuntime) -> web.Application:
    # Ollama accepts large prompts and blobs; aiohttp's 1 MiB default would 413 them.
    app = web.Application(middlewares=[_ollama_errors], client_max_size=1 << 34)
    app[RUNTIME] = runtime
    app.add_routes(
        [
            web.post("/api/generate", infer.generate),
            web.post("/api/chat", infer.chat),
            web.post("/api/embed", embed.embed),
            web.post("/api/embeddings", embed.embeddings),
            *manage.routes(),
            *control.routes(),
        ]
    )
    return app
