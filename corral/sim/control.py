"""The ``/_sim`` control endpoint: look inside a simulated node and flip its faults.

* ``GET /_sim/state`` — models present and loaded, in-flight requests, counters, faults.
* ``POST /_sim/faults`` — a partial JSON object of :class:`~corral.sim.faults.Faults`
  fields; answers the fault state now in force (``{}`` just reads it).
* ``POST /_sim/reset`` — clear faults and counters; answers the new state.
"""

from __future__ import annotations

from aiohttp import web

from corral.sim.node import RUNTIME
from corral.sim.wire import decode_body, error_response, json_response

__all__ = ["routes"]


async def state(request: web.Request) -> web.Response:
    return json_response(request.app[RUNTIME].state())


async def faults(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    raw = await request.read()
    patch = decode_body(raw) if raw.strip() else {}
    try:
        rt.set_faults(rt.faults.updated(patch))
    except ValueError as exc:
        return error_response(400, str(exc))
    return json_response(rt.faults.to_dict())


async def reset(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    rt.reset()
    return json_response(rt.state())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/_sim/state", state),
        web.post("/_sim/faults", faults),
        web.post("/_sim/reset", reset),
    ]
