"""The backend simulators: pure node models, two drivers.

:mod:`corral.sim.model` is an Ollama node's behaviour (slots, loads, VRAM, eviction,
keep-alive, token rates) and :mod:`corral.sim.vllm_model` a vLLM server's (continuous
batching, paged KV cache, prefix cache, preemption), both pure event models;
:mod:`corral.sim.launch` serves them over real sockets with each server's wire format,
and the fleet benchmark runs them in virtual time.
"""

from __future__ import annotations

from corral.sim.catalogue import Catalogue, ModelSpec, normalize_name
from corral.sim.faults import Faults
from corral.sim.launch import (
    NodeSpec,
    SimNode,
    VllmNode,
    VllmSpec,
    start_node,
    start_nodes,
    stop_nodes,
)
from corral.sim.model import NodeConfig, NodeModel
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_catalogue import served_spec
from corral.sim.vllm_model import VllmModel

__all__ = [
    "Catalogue",
    "Faults",
    "ModelSpec",
    "NodeConfig",
    "NodeModel",
    "NodeSpec",
    "SimNode",
    "VllmConfig",
    "VllmModel",
    "VllmNode",
    "VllmSpec",
    "normalize_name",
    "served_spec",
    "start_node",
    "start_nodes",
    "stop_nodes",
]
