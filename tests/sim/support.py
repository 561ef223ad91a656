"""Shared bits of the simulator tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from corral.sim.model import NodeConfig

# Fast but not instant: durations stay non-zero (so metrics are meaningful) and tiny.
FAST = NodeConfig(speed=200.0, jitter=0.0)
MODELS = ("llama3.2:1b", "qwen3:4b", "nomic-embed-text")


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the simulator reaches on its own (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
