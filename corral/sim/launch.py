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
from typing import overload

from corral.sim.catalogue import Catalogue
from corral.sim.faults import Faults
from corral.sim.hosting import HostedNode, serve_app
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


class SimNode(HostedNode[NodeSpec, NodeRuntime]):
    """A running node: its URL, its pure model and its runtime (faults, counters)."""

    @property
    def model(self) -> NodeModel:
        return self.runtime.model

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
    runner, port = await serve_app(make_app(runtime), runtime, spec.host, spec.port)
    return SimNode(spec, runtime, runner, port)


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
