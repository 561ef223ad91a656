"""The seed-style weighted score: latency, success rate, load and capacity.

One of the seed designs ranks servers by a weighted sum of four factors (latency
35 %, success rate 30 %, load 20 %, capacity 15 %). It is kept as a named policy for
fleets that know and tune it; the weights are options. It does not price model
loads, which is what the default ``corral`` cost model is for.

Each factor is scaled to 0..1, higher is better, over the free candidates:

* latency: the best EWMA time to first token among them divided by this one's
  (unmeasured counts as best: optimism makes new backends get tried);
* success: the EWMA of ok outcomes, drifting back to 1 while no outcome arrives
  (so a backend that lost its traffic gets another chance);
* load: 1 - in flight / max_concurrency;
* capacity: max_concurrency x weight relative to the largest candidate's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from corral.core.policy_base import Learning, ModelStats, RouteStats, free_only
from corral.core.types import BackendState, RequestInfo

__all__ = ["ScorePolicy", "recovered_success"]


def recovered_success(s: ModelStats | None, now: float, recovery_s: float) -> float:
    """The success EWMA, its shortfall halving every ``recovery_s`` without news."""
    if s is None or s.success >= 1.0:
        return 1.0
    age = now - s.success_at
    if age <= 0.0:
        return s.success
    return 1.0 - (1.0 - s.success) * math.exp2(-age / recovery_s)


class ScorePolicy(Learning):
    """Highest weighted score of latency, success rate, load and capacity."""

    name = "score"

    def __init__(
        self,
        latency_weight: float = 0.35,
        success_weight: float = 0.30,
        load_weight: float = 0.20,
        capacity_weight: float = 0.15,
        ewma_alpha: float = 0.3,
        recovery_s: float = 60.0,
    ) -> None:
        weights = (latency_weight, success_weight, load_weight, capacity_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("score weights must be >= 0 and not all 0")
        if recovery_s <= 0:
            raise ValueError("recovery_s must be > 0")
        self.weights = weights
        self.recovery_s = recovery_s
        self.stats = RouteStats(ewma_alpha)

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str]:
        model = info.model
        free = free_only(candidates, model)
        stats = self.stats
        found = [stats.get(b.name, model) for b in free]
        best_ttft = math.inf
        top_capacity = 0.0
        for b, s in zip(free, found, strict=True):
            if s is not None and s.ttft is not None and s.ttft < best_ttft:
                best_ttft = s.ttft
            cap = b.max_concurrency * max(b.weight, 0.0)
            if cap > top_capacity:
                top_capacity = cap
        w_lat, w_ok, w_load, w_cap = self.weights
        chosen = free[0]
        best = -math.inf
        parts = (0.0, 0.0, 0.0, 0.0)
        for b, s in zip(free, found, strict=True):
            ttft = s.ttft if s is not None else None
            lat = 1.0 if ttft is None or ttft <= 0.0 else min(1.0, best_ttft / ttft)
            ok = recovered_success(s, now, self.recovery_s)
            load = 1.0 - b.in_flight / b.max_concurrency
            cap = b.max_concurrency * max(b.weight, 0.0) / top_capacity if top_capacity else 1.0
            score = w_lat * lat + w_ok * ok + w_load * load + w_cap * cap
            if score > best:
                best, chosen, parts = score, b, (lat, ok, load, cap)
        lat, ok, load, cap = parts
        return chosen, (
            f"score {best:.2f} (lat {lat:.2f} ok {ok:.2f} load {load:.2f} cap {cap:.2f})"
            f" best of {len(free)}"
        )
