"""``corral serve --demo``: the gateway plus a small simulated Ollama fleet, in one process.

Three nodes hold overlapping models, so routing, failover and the merged views have
something to show. Their ports (11501-11503) are printed at start; each node's
``/_sim/faults`` endpoint flips it into a fault and back (see docs/simulator.md).
"""

from __future__ import annotations

import logging
import socket

from corral.app.gateway import Gateway
from corral.sim.launch import NodeSpec, SimNode, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig

__all__ = ["DEMO_FLEET", "start_demo_fleet", "stop_demo_fleet"]

log = logging.getLogger("corral.demo")

# name, preferred port, models on disk, models loaded at start
DEMO_FLEET: tuple[tuple[str, int, tuple[str, ...], tuple[str, ...]], ...] = (
    ("sim-a", 11501, ("llama3.2:1b", "qwen2.5:7b", "nomic-embed-text"), ("llama3.2:1b",)),
    ("sim-b", 11502, ("llama3.2:1b", "llama3.2:3b", "mistral:7b"), ("llama3.2:3b",)),
    ("sim-c", 11503, ("qwen2.5:7b", "gemma3:4b", "nomic-embed-text"), ("qwen2.5:7b",)),
)


def _port_or_any(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0  # taken: let the OS choose
    return port


async def start_demo_fleet(gw: Gateway) -> None:
    specs = [
        NodeSpec(
            port=_port_or_any(port),
            models=models,
            loaded=loaded,
            name=name,
            config=NodeConfig(num_parallel=2, seed=i),
        )
        for i, (name, port, models, loaded) in enumerate(DEMO_FLEET)
    ]
    nodes = await start_nodes(specs)
    gw.demo_nodes = nodes
    for node in nodes:
        gw.fleet.add(node.name, node.url, max_concurrency=4)
        log.info("demo node %s on %s holds %s", node.name, node.url, ", ".join(node.spec.models))


async def stop_demo_fleet(gw: Gateway) -> None:
    nodes: list[SimNode] = gw.demo_nodes
    await stop_nodes(nodes)
