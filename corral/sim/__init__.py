"""The Ollama node simulator: one pure node model, two drivers.

:mod:`corral.sim.model` is the node's behaviour (slots, loads, VRAM, eviction,
keep-alive, token rates) as a pure event model; :mod:`corral.sim.launch` serves it over
real sockets with Ollama's wire format, and the fleet benchmark runs it in virtual time.
"""

from __future__ import annotations

from corral.sim.catalogue import Catalogue, ModelSpec, normalize_name
from corral.sim.faults import Faults
from corral.sim.launch import NodeSpec, SimNode, start_node, start_nodes, stop_nodes
from corral.sim.model import NodeConfig, NodeModel

__all__ = [
    "Catalogue",
    "Faults",
    "ModelSpec",
    "NodeConfig",
    "NodeModel",
    "NodeSpec",
    "SimNode",
    "normalize_name",
    "start_node",
    "start_nodes",
    "stop_nodes",
]
