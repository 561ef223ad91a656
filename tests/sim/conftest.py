"""Fixtures: simulated nodes on real sockets inside the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from corral.sim.launch import NodeSpec, SimNode, VllmNode, VllmSpec, start_node, stop_nodes
from tests.sim.support import FAST, FAST_VLLM, MODELS, VLLM_MODEL

StartNode = Callable[..., Awaitable[SimNode]]
StartVllm = Callable[..., Awaitable[VllmNode]]


@pytest.fixture
async def start() -> AsyncIterator[StartNode]:
    """Start nodes with NodeSpec keywords; all are stopped after the test."""
    started: list[SimNode] = []

    async def _start(**kw: Any) -> SimNode:
        kw.setdefault("models", MODELS)
        kw.setdefault("config", FAST)
        node = await start_node(NodeSpec(**kw))
        started.append(node)
        return node

    yield _start
    await stop_nodes(started)


@pytest.fixture
async def sim(start: StartNode) -> SimNode:
    return await start()


@pytest.fixture
async def start_vllm() -> AsyncIterator[StartVllm]:
    """Start vLLM servers with VllmSpec keywords; all are stopped after the test."""
    started: list[VllmNode] = []

    async def _start(**kw: Any) -> VllmNode:
        kw.setdefault("model", VLLM_MODEL)
        kw.setdefault("config", FAST_VLLM)
        node = await start_node(VllmSpec(**kw))
        started.append(node)
        return node

    yield _start
    await stop_nodes(started)


@pytest.fixture
async def vllm(start_vllm: StartVllm) -> VllmNode:
    return await start_vllm()
