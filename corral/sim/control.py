"""The ``/_sim`` control endpoint: look inside a simulated node and flip its faults.

* ``GET /_sim/state`` — what the node holds and runs, counters, faults, config.
* ``POST /_sim/faults`` — a partial JSON object of :class:`~corral.sim.faults.Faults`
  fields; answers the fault state now in force (``{}`` just reads it).
* ``POST /_sim/reset`` — clear faults and counters; answers the new state.

Both dialects (Ollama and vLLM) mount it; errors here are plain ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from corral.sim.faults import Faults
from corral.sim.node import RUNTIME
from corral.sim.wire import decode_body, error_response, json_response

__all__ = ["Controlled", "routes"]


class Controlled(Protocol):
    """What a node runtime offers the control endpoint."""

    @property
    def faults(self) -> Faults: ...

    def set_faults(self, faults: Faults) -> None: ...

    def reset(self) -> None: ...

    def state(self) -> dict[str, Any]: ...


def routes(key: web.AppKey[Any] = RUNTIME) -> list[web.RouteDef]:
    """The control routes, reading the runtime stored under ``key`` in the app."""

    def runtime(request: web.Request) -> Controlled:
        rt: Controlled = request.app[key]
        return rt

    async def state(request: web.Request) -> web.Response:
        return json_response(runtime(request).state())

    async def faults(request: web.Request) -> web.Response:
        rt = runtime(request)
        raw = await request.read()
        patch = decode_body(raw) if raw.strip() else {}
        try:
            rt.set_faults(rt.faults.updated(patch))
        except ValueError as exc:
            return error_response(400, str(exc))
        return json_response(rt.faults.to_dict())

    async def reset(request: web.Request) -> web.Response:
        rt = runtime(request)
        rt.reset()
        return json_response(rt.state())

    return [
        web.get("/_sim/state", state),
        web.post("/_sim/faults", faults),
        web.post("/_sim/reset", reset),
    ]
