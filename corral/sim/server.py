"""The aiohttp application of one simulated Ollama node.

Routes: the inference endpoints (:mod:`corral.sim.infer`, :mod:`corral.sim.embed`),
model management (:mod:`corral.sim.manage`) and the ``/_sim`` control endpoint
(:mod:`corral.sim.control`). One middleware turns :class:`BadRequest` into Ollama's
400, unknown routes into gin's 404, and plays the ``hang`` fault, which swallows
every request but ``/_sim``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from corral.sim import embed, infer, manage
from corral.sim.hosting import play_hang, sim_app
from corral.sim.node import RUNTIME, NodeRuntime
from corral.sim.wire import BadRequest, error_response

__all__ = ["make_app"]


@web.middleware
async def _ollama_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    await play_hang(request, rt)
    try:
        return await handler(request)
    except BadRequest as exc:
        rt.counters.errors["bad_request"] += 1
        return error_response(400, str(exc))
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        # Gin's answer for an unknown route or method, which Ollama leaves as is.
        return web.Response(status=404, text="404 page not found")


def make_app(runtime: NodeRuntime) -> web.Application:
    routes = [
        web.post("/api/generate", infer.generate),
        web.post("/api/chat", infer.chat),
        web.post("/api/embed", embed.embed),
        web.post("/api/embeddings", embed.embeddings),
        *manage.routes(),
    ]
    # Ollama accepts large prompts and blobs; aiohttp's 1 MiB default would 413 them.
    return sim_app(RUNTIME, runtime, _ollama_errors, routes, client_max_size=1 << 34)
