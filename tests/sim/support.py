"""Shared bits of the simulator tests."""

from __future__ import annotations

from corral.sim.model import NodeConfig
from corral.sim.model_types import VllmConfig
from tests.helpers import until

__all__ = ["FAST", "FAST_VLLM", "MODELS", "VLLM_MODEL", "until"]

# Fast but not instant: durations stay non-zero (so metrics are meaningful) and tiny.
FAST = NodeConfig(speed=200.0, jitter=0.0)
MODELS = ("llama3.2:1b", "qwen3:4b", "nomic-embed-text")

# A small model at high speed: a 60-token answer streams in a few milliseconds.
FAST_VLLM = VllmConfig(speed=100.0, jitter=0.0)
VLLM_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
