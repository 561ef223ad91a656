"""Start simulated nodes (Ollama, or vLLM with a :class:`VllmSpec`) inside a running loop.

For tests and the gateway's demo mode::

    nodes = await start_nodes([NodeSpec(models=("llama3.2:1b",)), NodeSpec(port=0)])
    nodes[0].url          # "http://127.0.0.1:41234"
    nodes[0].model        # the pure NodeModel behind it
    nodes[0].set_faults(busy=True)
    await stop_nodes(nodes)

Port 0 asks the OS for a free port; ``.port`` and ``.url`` report the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, overload

from aiohttp import web

from corral.sim.catalogue import Catalogue
from corral.sim.faults import Faults
from corral.sim.model import NodeConfig, NodeModel
from corral.sim.node import NodeRuntime
from corral.sim.server import make_app
from corral.sim.vllm_launch import VllmNode, VllmSpec, start_vllm_node

__all__ = [
    "NodeSpec",
    "SimNode",
    "VllmNode",
    "VllmSpec",
    "start_node",
    "start_nodes",
    "stop_nodes",
]


@dataclass(frozen=True)
class NodeSpec:
    """How to build one node. ``loaded`` models are resident from the start."""

    port: int = 0
    host: str = "127.0.0.1"
    models: Sequence[str] = ("llama3.2:1b",)
    loaded: Sequence[str] = ()
    config: NodeConfig = field(default_factory=NodeConfig)
    faults: Faults = field(default_factory=Faults)
    catalogue: Catalogue | None = None
    name: str = ""
    dialect: str = "ollama"


class SimNode:
    """A running node: its URL, its pure model and its runtime (faults, counters)."""

    def __init__(self, spec: NodeSpec, runtime: NodeRuntime, runner: web.AppRunner, port: int):
        self.spec = spec
        self.runtime = runtime
        self.host = spec.host
        self.port = port
        self.name = spec.name or f"sim-{port}"
        self._runner = runner

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def model(self) -> NodeModel:
        return self.runtime.model

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

    async def __aenter__(self) -> SimNode:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"SimNode({self.url}, models={[s.name for s in self.model.present()]})"


@overload
async def start_node(spec: NodeSpec) -> SimNode: ...
@overload
async def start_node(spec: VllmSpec) -> VllmNode: ...
async def start_node(spec: NodeSpec | VllmSpec) -> SimNode | VllmNode:
    if isinstance(spec, VllmSpec):
        return await start_vllm_node(spec)
    return await _start_ollama_node(spec)


async def _start_ollama_node(spec: NodeSpec) -> SimNode:
    catalogue = spec.catalogue or Catalogue.builtin()
    names = list(dict.fromkeys([*spec.models, *spec.loaded]))
    model = NodeModel(spec.config, [catalogue.get(n) for n in names])
    runtime = NodeRuntime(model, catalogue, spec.faults, seed=spec.config.seed)
    for name in spec.loaded:
        runtime.preload(name)
    # handler_cancellation: a client that disconnects cancels its handler, which
    # cancels the request in the model, as Ollama does on a closed connection.
    runner = web.AppRunner(
        make_app(runtime), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, spec.host, spec.port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        runtime.close()
        await runner.cleanup()
        raise
    return SimNode(spec, runtime, runner, _bound_port(runner, spec.port))


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


@overload
async def start_nodes(specs: Iterable[NodeSpec]) -> list[SimNode]: ...
@overload
async def start_nodes(specs: Iterable[VllmSpec]) -> list[VllmNode]: ...
@overload
async def start_nodes(specs: Iterable[NodeSpec | VllmSpec]) -> list[SimNode | VllmNode]: ...
async def start_nodes(specs: Iterable[NodeSpec | VllmSpec]) -> Sequence[SimNode | VllmNode]:
    """Start every node (all or none: a failure stops the ones already up)."""
    nodes: list[SimNode | VllmNode] = []
    try:
        for spec in specs:
            nodes.append(await start_node(spec))
    except BaseException:
        await stop_nodes(nodes)
        raise
    return nodes


async def stop_nodes(nodes: Iterable[SimNode | VllmNode]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes))
