"""Shared bits of the simulator tests."""

from __future__ import annotations

from corral.sim.model import NodeConfig
from tests.helpers import until

__all__ = ["FAST", "MODELS", "until"]

# Fast but not instant: durations stay non-zero (so metrics are meaningful) and tiny.
FAST = NodeConfig(speed=200.0, jitter=0.0)
MODELS = ("llama3.2:1b", "qwen3:4b", "nomic-embed-text")
