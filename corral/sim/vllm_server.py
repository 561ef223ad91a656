"""The aiohttp application of one simulated vLLM server.

Routes: the OpenAI text endpoints (:mod:`corral.sim.vllm_infer`), vLLM's other endpoints
(:mod:`corral.sim.vllm_routes`) and the ``/_sim`` control endpoint. One middleware
turns :class:`~corral.sim.vllm_wire.ApiError` into vLLM's error body, unknown routes
into FastAPI's ``{"detail": "Not Found"}``, and plays the ``hang`` fault, which
swallows every request but ``/_sim``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from corral.sim import vllm_infer, vllm_routes
from corral.sim.hosting import play_hang, sim_app
from corral.sim.vllm_node import VLLM_RUNTIME, VllmRuntime
from corral.sim.vllm_wire import ApiError, error_response, json_response
from corral.sim.wire import BadRequest
from corral.sim.wire import error_response as plain_error

__all__ = ["make_vllm_app"]


@web.middleware
async def _vllm_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    rt = request.app[VLLM_RUNTIME]
    await play_hang(request, rt)
    try:
        return await handler(request)
    except ApiError as exc:
        # Fault answers (5xx) were counted under the fault's name where they were drawn.
        if exc.status < 500:
            rt.counters.errors["not_found" if exc.status == 404 else "bad_request"] += 1
        return error_response(exc)
    except BadRequest as exc:  # the /_sim control endpoint's own errors
        return plain_error(400, str(exc))
    except web.HTTPNotFound:
        return json_response({"detail": "Not Found"}, 404)
    except web.HTTPMethodNotAllowed:
        return json_response({"detail": "Method Not Allowed"}, 405)


def make_vllm_app(runtime: VllmRuntime) -> web.Application:
    routes = [
        web.post("/v1/chat/completions", vllm_infer.chat_completions),
        web.post("/v1/completions", vllm_infer.completions),
        *vllm_routes.routes(),
    ]
    # Long prompts are normal; aiohttp's 1 MiB default body limit would 413 them.
    return sim_app(VLLM_RUNTIME, runtime, _vllm_errors, routes, client_max_size=1 << 30)
