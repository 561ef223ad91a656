"""A fleet-benchmark scenario run live: ``corral sim`` nodes behind a real gateway.

The nodes get the very :class:`~corral.sim.model_types.NodeConfig` the discrete-event
simulation builds for them (:func:`node_config`), the gateway the scheduler settings
the simulation runs with (:func:`gateway_settings`), and :func:`replay` sends each
arrival at its own time (real seconds = virtual seconds), asking for its exact prompt
and output token counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from corral.fleetbench.scenario import NodeSpec as ScenarioNode
from corral.fleetbench.scenario import Scenario
from corral.fleetbench.workload import Arrival
from corral.sim.launch import NodeSpec, SimNode, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig
from tests.helpers import run_gateway

__all__ = ["LiveFleet", "Served", "gateway_settings", "live_fleet", "node_config", "replay"]

_GIB = 1024**3
_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


def node_config(node: ScenarioNode, *, seed: int, index: int) -> NodeConfig:
    """The NodeConfig :class:`corral.fleetbench.nodes.SimNode` builds for the
    ``index``-th node of a run seeded ``seed`` (its seeded 5% jitter included)."""
    return NodeConfig(
        num_parallel=node.num_parallel,
        max_loaded_models=node.max_loaded_models,
        vram_bytes=int(node.vram_gb * _GIB),
        max_queue=node.max_queue,
        keep_alive=node.keep_alive_s,
        speed=node.speed,
        token_chunk=0,
        seed=(seed * 100 + index) * 1000,
    )


def gateway_settings(scenario: Scenario, policy: str, urls: Sequence[str]) -> dict[str, Any]:
    """Gateway settings for ``run_gateway`` matching the scenario's ``gateway`` block."""
    gw = scenario.gateway
    backends = [
        {
            "name": node.name,
            "url": url,
            "max_concurrency": node.max_concurrency,
            "max_per_model": node.max_per_model,
            "vram_gb": node.vram_gb,  # GiB in both
            "max_loaded_models": node.max_loaded_models,
        }
        for node, url in zip(scenario.nodes, urls, strict=True)
    ]
    retry: dict[str, Any] = {
        "attempts": gw.retry_attempts,
        "backoff_s": gw.backoff_s,
        "backoff_max_s": gw.backoff_max_s,
    }
    if gw.retry_budget is not None:
        retry["budget_ratio"] = gw.retry_budget
    return {
        "backends": backends,
        "policy": policy,
        "routing": {"keep_alive_s": gw.keep_alive_s, "options": gw.policy_options.get(policy, {})},
        "health": {"interval_s": gw.probe_interval_s},
        "queue": {
            "timeout_s": gw.queue_timeout_s,
            "max_waiting": gw.max_waiting,
            "max_per_tenant": gw.max_waiting_per_tenant,
            "aging_s": gw.aging_s,
        },
        "retry": retry,
        "breakers": {"enabled": gw.breakers},
    }


@dataclass
class LiveFleet:
    url: str
    nodes: list[SimNode]

    @property
    def loads(self) -> int:
        return sum(n.model.stats.loads for n in self.nodes)


@asynccontextmanager
async def live_fleet(scenario: Scenario, policy: str, *, seed: int) -> AsyncIterator[LiveFleet]:
    """The scenario's Ollama nodes as ``corral sim`` nodes behind a gateway."""
    specs = [
        NodeSpec(
            name=node.name,
            models=node.models,
            loaded=node.preload,
            config=node_config(node, seed=seed, index=i),
        )
        for i, node in enumerate(scenario.nodes)
    ]
    nodes = await start_nodes(specs)
    try:
        settings = gateway_settings(scenario, policy, [n.url for n in nodes])
        async with run_gateway(**settings) as running:
            yield LiveFleet(running.url, nodes)
    finally:
        await stop_nodes(nodes)


@dataclass(frozen=True)
class Served:
    """One request as the client saw it; times from its send, in seconds."""

    status: int
    backend: str | None
    reason: str | None
    ttft_s: float | None  # to the first byte of the streamed body
    e2e_s: float


def prompt_text(i: int, tokens: int) -> str:
    """``4 x tokens`` characters, unique from the first: the simulator counts
    ``ceil(len / 4)`` tokens for a raw prompt and the gateway estimates ``len // 4``
    (of "\\n" + prompt), so both see exactly ``tokens``; no two prompts share a block."""
    head = f"request {i} "
    body = head + _FILLER * (4 * tokens // len(_FILLER) + 1)
    return body[: 4 * tokens]


async def replay(url: str, arrivals: Sequence[Arrival]) -> list[Served]:
    """Send every arrival at ``t`` seconds from now; answers in arrival order."""
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        # The client's first request pays for its connection: not an arrival's.
        (await client.get("/api/version")).raise_for_status()
        t0 = loop.time()

        async def one(i: int, a: Arrival) -> Served:
            body = {
                "model": a.model,
                "prompt": prompt_text(i, a.prompt_tokens),
                "raw": True,
                "think": False,  # a thinking model would add its thoughts to the output
                "stream": True,
                "options": {"num_predict": a.output_tokens},
            }
            await asyncio.sleep(max(0.0, t0 + a.t - loop.time()))
            sent = loop.time()
            first = None
            headers = {"X-Corral-Tenant": a.tenant}
            async with client.stream("POST", "/api/generate", json=body, headers=headers) as r:
                async for chunk in r.aiter_bytes():
                    if first is None and chunk:
                        first = loop.time() - sent
            return Served(
                r.status_code,
                r.headers.get("X-Corral-Backend"),
                r.headers.get("X-Corral-Route-Reason"),
                first,
                loop.time() - sent,
            )

        return await asyncio.gather(*(one(i, a) for i, a in enumerate(arrivals)))
