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
from types import TracebackType
from typing import Any

from aiohttp import web

from corral.sim.catalogue import Catalogue
from corral.sim.faults import Faults
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


class VllmNode:
    """A running vLLM server: its URL, its pure model and its runtime."""

    dialect = "vllm"

    def __init__(self, spec: VllmSpec, runtime: VllmRuntime, runner: web.AppRunner, port: int):
        self.spec = spec
        self.runtime = runtime
        self.host = spec.host
        self.port = port
        self.name = spec.name or f"vllm-{port}"
        self._runner = runner

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def model(self) -> VllmModel:
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

    async def __aenter__(self) -> VllmNode:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"VllmNode({self.url}, model={self.model.spec.name!r})"


async def start_vllm_node(spec: VllmSpec) -> VllmNode:
    model = VllmModel(served_spec(spec.model, spec.catalogue), spec.config)
    runtime = VllmRuntime(model, spec.faults, seed=spec.config.seed)
    # handler_cancellation: a client that disconnects cancels its handler, which aborts
    # the sequence in the engine, as vLLM does on a closed connection.
    runner = web.AppRunner(
        make_vllm_app(runtime), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, spec.host, spec.port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        runtime.close()
        await runner.cleanup()
        raise
    port = spec.port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port = int(address[1])
            break
    return VllmNode(spec, runtime, runner, port)
