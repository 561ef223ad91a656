"""``corral serve --demo``: the gateway plus a small fleet, in one process, no GPU needed.

Three simulated Ollama nodes hold overlapping models, a simulated vLLM server serves
Qwen, and a real llama.cpp engine (the xllamacpp wheel) runs a tiny random-weight
model that Corral writes itself — so routing, failover, translation and the merged
views all have something to show. Ports 11501-11505 are used when free; each
simulated node's ``/_sim/faults`` endpoint flips it into a fault and back
(docs/simulator.md).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from corral.app.gateway import Gateway
from corral.config.models import BackendConfig
from corral.core.types import BackendKind
from corral.engines.llamacpp import start_llamacpp_async
from corral.engines.tinymodel import cached_tiny_model
from corral.sim.launch import NodeSpec, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig, VllmConfig
from corral.sim.vllm_launch import VllmSpec

__all__ = ["DEMO_FLEET", "start_demo_fleet", "stop_demo_fleet"]

log = logging.getLogger("corral.demo")

# name, preferred port, models on disk, models loaded at start
DEMO_FLEET: tuple[tuple[str, int, tuple[str, ...], tuple[str, ...]], ...] = (
    ("sim-a", 11501, ("llama3.2:1b", "qwen2.5:7b", "nomic-embed-text"), ("llama3.2:1b",)),
    ("sim-b", 11502, ("llama3.2:1b", "llama3.2:3b", "mistral:7b"), ("llama3.2:3b",)),
    ("sim-c", 11503, ("qwen2.5:7b", "gemma3:4b", "nomic-embed-text"), ("qwen2.5:7b",)),
)
VLLM = ("vllm-a", 11504, "Qwen/Qwen2.5-7B-Instruct")
LLAMACPP = ("llama-cpp", 11505, "tiny-llama")


def _port_or_any(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0  # taken: let the OS choose
    return port


async def start_demo_fleet(gw: Gateway) -> None:
    specs: list[Any] = [
        NodeSpec(
            port=_port_or_any(port),
            models=models,
            loaded=loaded,
            name=name,
            config=NodeConfig(num_parallel=2, seed=i),
        )
        for i, (name, port, models, loaded) in enumerate(DEMO_FLEET)
    ]
    name, port, model = VLLM
    specs.append(VllmSpec(port=_port_or_any(port), model=model, name=name, config=VllmConfig()))
    nodes = await start_nodes(specs)
    gw.demo_nodes.extend(nodes)
    for node, spec in zip(nodes, specs, strict=True):
        kind: BackendKind = "openai" if isinstance(spec, VllmSpec) else "ollama"
        gw.add_backend(
            BackendConfig(name=node.name, url=node.url, kind=kind, max_concurrency=4),
            origin="demo",
        )
        log.info("demo node %s (%s) on %s", node.name, kind, node.url)
    await _start_llamacpp(gw)


async def _start_llamacpp(gw: Gateway) -> None:
    """A real engine beside the simulated ones; the demo goes on without it if it fails."""
    name, port, alias = LLAMACPP
    try:
        engine = await start_llamacpp_async(
            cached_tiny_model(), port=_port_or_any(port), parallel=2, embedding=True, alias=alias
        )
    except Exception as exc:  # an engine that cannot start here must not stop the demo
        log.warning("demo: llama.cpp engine not started (%s); continuing without it", exc)
        return
    gw.demo_engines.append(engine)
    gw.add_backend(
        BackendConfig(name=name, url=engine.url, kind="openai", max_concurrency=2), origin="demo"
    )
    log.info("demo node %s (llama.cpp, model %s) on %s", name, alias, engine.url)


async def stop_demo_fleet(gw: Gateway) -> None:
    for engine in gw.demo_engines:
        await engine.astop()
    await stop_nodes(gw.demo_nodes)
