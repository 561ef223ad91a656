"""The live fleet: probes against real simulated nodes, slot waits with real futures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from corral.adapters.fleet import Fleet
from corral.core.errors import NoHealthyBackend, QueueTimeout
from corral.core.policies import make_policy
from corral.core.types import Outcome, RequestInfo
from corral.sim.launch import NodeSpec, SimNode, start_node
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_launch import VllmSpec
from tests.helpers import FAST_SIM, free_port

INFO = RequestInfo("llama3.2:1b", "/api/generate")


def make_fleet(queue_timeout: float = 1.0) -> Fleet:
    return Fleet(
        make_policy("least_conn"),
        max_waiting=8,
        queue_timeout=queue_timeout,
        retry_after=2,
        connect_timeout=1,
        probe_interval=60,
        probe_timeout=1,
    )


@pytest.fixture
async def node() -> AsyncIterator[SimNode]:
    async with await start_node(NodeSpec(models=("llama3.2:1b",), config=FAST_SIM)) as n:
        yield n


async def test_a_probe_reads_models_version_and_health(node: SimNode) -> None:
    fleet = make_fleet()
    fleet.add("a", node.url)
    fleet.add("dead", f"http://127.0.0.1:{free_port()}")
    await fleet.probe_all()
    try:
        a, dead = fleet.backends["a"], fleet.backends["dead"]
        assert a.healthy and a.models == {"llama3.2:1b"} and a.version
        assert not dead.healthy and dead.last_error and dead.consecutive_failures == 1
        assert fleet.tag_entries["a"]["llama3.2:1b"]["details"]["family"]
    finally:
        await fleet.stop()


@pytest.fixture
async def one_slot(node: SimNode) -> AsyncIterator[Fleet]:
    """A probed fleet of one backend ("a") with a single slot; its queue waits 0.2 s."""
    fleet = make_fleet(queue_timeout=0.2)
    fleet.add("a", node.url, max_concurrency=1)
    await fleet.probe_all()
    yield fleet
    await fleet.stop()


async def test_a_waiter_gets_the_slot_released_by_another(one_slot: Fleet) -> None:
    first = await one_slot.acquire(INFO)
    waiting = asyncio.create_task(one_slot.acquire(INFO))
    await asyncio.sleep(0.01)
    assert not waiting.done() and one_slot.scheduler.waiting == 1
    one_slot.release(first, Outcome(ok=True))
    second = await waiting
    assert second.decision is not None
    assert second.decision.backend == "a" and second.decision.queued_s > 0
    assert one_slot.backends["a"].in_flight == 1


async def test_a_wait_times_out_with_retry_after(one_slot: Fleet) -> None:
    await one_slot.acquire(INFO)
    with pytest.raises(QueueTimeout) as err:
        await one_slot.acquire(INFO)
    assert err.value.headers() == {"Retry-After": "2"}
    assert one_slot.scheduler.waiting == 0


async def test_a_cancelled_waiter_does_not_leak_its_slot(one_slot: Fleet) -> None:
    first = await one_slot.acquire(INFO)
    waiting = asyncio.create_task(one_slot.acquire(INFO))
    await asyncio.sleep(0.01)
    # The slot is handed over and the waiter cancelled in the same instant.
    one_slot.release(first, Outcome(ok=True))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert one_slot.backends["a"].in_flight == 0


async def test_vllm_load_signals_are_read_from_its_metrics() -> None:
    vllm = await start_node(VllmSpec(config=VllmConfig(speed=200, jitter=0)))
    ollama_node = await start_node(NodeSpec(config=FAST_SIM))
    fleet = make_fleet()
    fleet.add("v", vllm.url, kind="openai")
    fleet.add("o", ollama_node.url)
    try:
        await fleet.probe_all()
        v = fleet.backends["v"]
        assert v.healthy and v.models == {"Qwen/Qwen2.5-7B-Instruct:latest"}
        assert v.signals is not None and v.signals.prefix_cache_queries == 0
        assert fleet.upstream_name("v", "Qwen/Qwen2.5-7B-Instruct:latest") == (
            "Qwen/Qwen2.5-7B-Instruct"
        )
        assert fleet.backends["o"].signals is None  # Ollama has no /metrics
        async with httpx.AsyncClient(base_url=vllm.url) as client:
            body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 2}
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        await fleet.probe_all()
        assert v.signals is not None and v.signals.prefix_cache_queries > 0
    finally:
        await fleet.stop()
        await vllm.stop()
        await ollama_node.stop()


async def test_pause_holds_requests_until_resume_and_drain_moves_traffic(node: SimNode) -> None:
    fleet = make_fleet(queue_timeout=2.0)
    fleet.add("a", node.url, max_concurrency=2)
    await fleet.probe_all()
    try:
        fleet.pause()
        waiting = asyncio.create_task(fleet.acquire(INFO))
        await asyncio.sleep(0.02)
        assert not waiting.done() and fleet.scheduler.waiting == 1
        fleet.resume()
        ticket = await waiting
        assert ticket.decision is not None and ticket.decision.backend == "a"
        fleet.drain("a")
        with pytest.raises(NoHealthyBackend, match="1 draining"):
            await fleet.acquire(INFO)
        assert not fleet.scheduler.drained("a")
        fleet.release(ticket, Outcome(ok=True))
        assert fleet.scheduler.drained("a")
        fleet.drain("a", on=False)
        again = await fleet.acquire(INFO)
        assert again.decision is not None
    finally:
        await fleet.stop()
