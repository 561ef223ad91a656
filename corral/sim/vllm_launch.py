"""Start simulated vLLM servers inside a running event loop.

:func:`corral.sim.launch.start_node` / ``start_nodes`` accept a :class:`VllmSpec` as
well as an Ollama :class:`~corral.sim.launch.NodeSpec`::

    nodes = await start_nodes([VllmSpec(model="Qwen/Qwen2.5-7B-Instruct")])
    nodes[0].url            # "http://127.0.0.1:41234" (OpenAI base URL: url + "/v1")
    nodes[0].model          # the pure VllmModel behind it
    nodes[0].set_faults(busy=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.sim.catalogue import Catalogue
from corral.sim.faults import Faults
from corral.sim.hosting import HostedNode, serve_app
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_catalogue import served_spec
from corral.sim.vllm_model import VllmModel
from corral.sim.vllm_node import VllmRuntime
from corral.sim.vllm_server import make_vllm_app

__all__ = ["VllmNode", "VllmSpec", "start_vllm_node"]


@dataclass(frozen=True)
class VllmSpec:
    """How to build one vLLM server: it serves exactly one model."""

    port: int = 0
    host: str = "127.0.0.1"
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    config: VllmConfig = field(default_factory=VllmConfig)
    faults: Faults = field(default_factory=Faults)
    catalogue: Catalogue | None = None
    name: str = ""
    dialect: str = "vllm"


class VllmNode(HostedNode[VllmSpec, VllmRuntime]):
    """A running vLLM server: its URL, its pure model and its runtime."""

    dialect = "vllm"
    name_prefix = "vllm"

    @property
    def model(self) -> VllmModel:
        return self.runtime.model

    def __repr__(self) -> str:
        return f"VllmNode({self.url}, model={self.model.spec.name!r})"


async def start_vllm_node(spec: VllmSpec) -> VllmNode:
    model = VllmModel(served_spec(spec.model, spec.catalogue), spec.config)
    runtime = VllmRuntime(model, spec.faults, seed=spec.config.seed)
    runner, port = await serve_app(make_vllm_app(runtime), runtime, spec.host, spec.port)
    return VllmNode(spec, runtime, runner, port)
