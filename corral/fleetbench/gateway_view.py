"""What the simulated gateway knows and does around the scheduler, as the live one does.

:func:`refresh` is the health probe: what ``corral.adapters.fleet`` reads from a
backend (up or down, its models, what is resident, vLLM's engine signals), handed
to the scheduler through the same calls the live fleet makes. :class:`Retries` is
the relay's retry rule. And :func:`engine_prefix_bound` is the infinite-cache
prefix bound in vLLM's own blocks.
"""

from __future__ import annotations

import math
from dataclasses import replace

from corral.core.retry import Backoff, RetryBudget, RetryDecision, RetryPolicy, Verdict
from corral.core.scheduler import Scheduler
from corral.core.types import EngineSignals
from corral.fleetbench.metrics import prefix_hit_bound
from corral.fleetbench.nodes import Probe
from corral.fleetbench.scenario import Scenario
from corral.fleetbench.workload import Arrival, engine_prefix

__all__ = ["VLLM_BLOCK", "Retries", "engine_prefix_bound", "refresh"]

VLLM_BLOCK = 16  # VllmConfig.block_size


def refresh(sched: Scheduler, name: str, seen: Probe | None, now: float) -> None:
    """One probe of backend ``name``: ``seen`` is what it answered (None: no answer)."""
    if seen is None:
        sched.unreachable(name, now, "probe failed")
        return
    state = sched.backends[name]
    if state.kind == "openai":
        sched.probed(name, now, models=seen.models)
        state.signals = EngineSignals(
            running=seen.running,
            waiting=seen.waiting,
            kv_cache_usage=seen.kv_cache_usage,
            prefix_cache_queries=seen.prefix_queries,
            prefix_cache_hits=seen.prefix_hits,
            preemptions=seen.preemptions,
            at=now,
        )
    else:
        sched.probed(name, now, models=seen.models, loaded=dict(seen.loaded))


def engine_prefix_bound(scenario: Scenario, arrivals: list[Arrival]) -> float | None:
    """The infinite-cache prefix hit bound of a vLLM fleet, counted in its blocks."""
    if not any(n.kind == "vllm" for n in scenario.nodes) or not any(a.prefix for a in arrivals):
        return None
    block = scenario.workload.block_tokens
    engine = [replace(a, prefix=engine_prefix(a.prefix, block, VLLM_BLOCK)) for a in arrivals]
    return prefix_hit_bound(engine, VLLM_BLOCK)


class Retries:
    """The relay's retry rule: :class:`~corral.core.retry.RetryPolicy` with up to
    ``attempts`` tries, the gateway-wide budget (``budget`` None: none, only the
    attempt cap) and a full-jitter backoff between tries."""

    def __init__(
        self, attempts: int, base: float, cap: float, budget: float | None, seed: int
    ) -> None:
        self.attempts = attempts
        self.backoff = Backoff(base, cap, seed=seed)
        ratio = math.inf if budget is None else budget
        self.policy = RetryPolicy(attempts, budget=RetryBudget(ratio), backoff=self.backoff)

    def on_request(self, now: float) -> None:
        self.policy.on_request(now)

    def decide(
        self, verdict: Verdict, attempt: int, now: float, *, streamed: bool, gone: bool
    ) -> RetryDecision:
        return self.policy.decide(verdict, attempt, now, streamed=streamed, backend_gone=gone)
