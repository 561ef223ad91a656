"""A running simulated server, whatever its dialect: its aiohttp app on a TCP port.

:func:`sim_app` builds a server's app (its routes, ``/_sim``, one error middleware),
:func:`play_hang` is the ``hang`` fault that middleware plays, :func:`serve_app` binds
the app (port 0 asks the OS for a free one) and :class:`HostedNode` is the handle
:mod:`corral.sim.launch` returns: URL, runtime, faults, reset and stop.
:class:`~corral.sim.launch.SimNode` (Ollama) and
:class:`~corral.sim.vllm_launch.VllmNode` (vLLM) add their model and name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from corral.core.names import url_host
from corral.sim import control
from corral.sim.faults import Faults
from corral.sim.runtime import LoopRuntime

__all__ = ["HostSpec", "HostedNode", "play_hang", "serve_app", "sim_app"]


class HostSpec(Protocol):
    """What a node's spec says about where it listens."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def name(self) -> str: ...


S = TypeVar("S", bound=HostSpec)
R = TypeVar("R", bound=LoopRuntime[Any])


def sim_app(
    key: web.AppKey[R],
    runtime: R,
    errors: Middleware,
    routes: Iterable[web.RouteDef],
    client_max_size: int,
) -> web.Application:
    """The app of one simulated server: its ``routes`` and the ``/_sim`` control
    endpoint, ``runtime`` stored under ``key``, ``errors`` its one middleware."""
    app = web.Application(middlewares=[errors], client_max_size=client_max_size)
    app[key] = runtime
    app.add_routes([*routes, *control.routes(key)])
    return app


async def play_hang(request: web.Request, runtime: LoopRuntime[Any]) -> None:
    """The ``hang`` fault: every request but ``/_sim`` waits until its client leaves."""
    if runtime.faults.hang and not request.path.startswith("/_sim"):
        runtime.counters.errors["hang"] += 1
        await asyncio.Event().wait()  # until the client leaves and aiohttp cancels us


async def serve_app(
    app: web.Application, runtime: LoopRuntime[Any], host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port``; returns the runner and the port bound.

    On failure the runtime is closed and the runner cleaned up.
    """
    # handler_cancellation: a client that disconnects cancels its handler, which cancels
    # the request in the model, as both servers do on a closed connection.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        runtime.close()
        await runner.cleanup()
        raise
    return runner, _bound_port(runner, port)


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


class HostedNode(Generic[S, R]):
    """A running server: its URL, its spec and its runtime (faults, counters)."""

    name_prefix = "sim"  # of the name a spec without one gets: "sim-41234"

    def __init__(self, spec: S, runtime: R, runner: web.AppRunner, port: int) -> None:
        self.spec = spec
        self.runtime = runtime
        self.host = spec.host
        self.port = port
        self.name = spec.name or f"{self.name_prefix}-{port}"
        self._runner = runner

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    def state(self) -> dict[str, Any]:
        return self.runtime.state()

    def set_faults(self, **changes: Any) -> Faults:
        """Change some faults (same keys as ``POST /_sim/faults``); returns them all."""
        self.runtime.set_faults(self.runtime.faults.updated(changes))
        return self.runtime.faults

    def reset(self) -> None:
        self.runtime.reset()

    async def stop(self) -> None:
        self.runtime.close()
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
