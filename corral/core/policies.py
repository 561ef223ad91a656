"""Routing policies: a tiny protocol and a registry of them by name.

The protocol, the no-op hooks and the learned statistics live in
:mod:`corral.core.policy_base` (re-exported here). This module holds the simple
policies and the registry; the seed-style score is in :mod:`corral.core.scoring`,
the default ``corral`` cost model in :mod:`corral.core.costmodel` and prefix/session
affinity in :mod:`corral.core.affinity`.

Every policy is pure: no I/O, no clock reads (``now`` is passed in), no globals;
randomness comes from a seeded ``random.Random`` owned by the policy.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from corral.core.affinity import AFFINITY_OPTIONS, Affinity, Sticky
from corral.core.costmodel import CorralPolicy
from corral.core.policy_base import Hooks, Learning, Policy, RouteStats, free_only, one_line
from corral.core.scoring import ScorePolicy
from corral.core.types import BackendState, RequestInfo

__all__ = [
    "POLICIES",
    "CorralPolicy",
    "Hooks",
    "Latency",
    "LeastConn",
    "Policy",
    "PowerOfTwo",
    "RoundRobin",
    "ScorePolicy",
    "Weighted",
    "free_only",
    "make_policy",
]


class RoundRobin(Hooks):
    """Rotate through free candidates, one counter per model."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str]:
        free = free_only(candidates, info.model)
        i = self._next.get(info.model, 0)
        self._next[info.model] = i + 1
        chosen = free[i % len(free)]
        return chosen, f"round_robin turn {i % len(free) + 1} of {len(free)}"


class LeastConn(Hooks):
    """Fewest requests in flight relative to capacity; ties rotate.

    Comparing the ratio (not the raw count) keeps a 16-slot node from being
    treated like a 1-slot one.
    """

    name = "least_conn"

    def __init__(self) -> None:
        self._turn = 0

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str]:
        free = free_only(candidates, info.model)
        if len(free) == 1:
            b = free[0]
            return b, f"least_conn: only free candidate ({b.in_flight}/{b.max_concurrency} busy)"
        best: list[BackendState] = []
        best_load = 2.0**31
        for b in free:
            load = b.in_flight / b.max_concurrency
            if load < best_load:
                best_load = load
                best = [b]
            elif load == best_load:
                best.append(b)
        self._turn += 1
        chosen = best[self._turn % len(best)]
        return chosen, (
            f"least_conn: {chosen.in_flight}/{chosen.max_concurrency} busy, least of {len(free)}"
        )


class Weighted(Hooks):
    """Static weights (``BackendState.weight``), smooth weighted round robin per model.

    nginx's smooth variant: every turn each free candidate gains its weight, the
    richest is chosen and pays the total. Over any window the split follows the
    weights and heavy backends are interleaved rather than served in bursts.
    """

    name = "weighted"

    def __init__(self) -> None:
        self._credit: dict[str, dict[str, float]] = {}

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str]:
        credit = self._credit.get(info.model)
        if credit is None:
            credit = self._credit[info.model] = {}
        total = 0.0
        chosen: BackendState | None = None
        best = -math.inf
        for b in free_only(candidates, info.model):
            w = b.weight if b.weight > 0 else 0.0
            total += w
            c = credit.get(b.name, 0.0) + w
            credit[b.name] = c
            if c > best:
                best, chosen = c, b
        assert chosen is not None  # the scheduler guarantees a free candidate
        credit[chosen.name] = best - total
        return chosen, f"weighted: weight {chosen.weight:g} of {total:g}"

    def on_backend_removed(self, name: str) -> None:
        for credit in self._credit.values():
            credit.pop(name, None)


class PowerOfTwo(Hooks):
    """Power of two choices: sample two free candidates, take the less loaded.

    Nearly as good as least-connections at spreading load, without every gateway
    replica herding onto the same least-loaded node. Seeded, so runs repeat.
    """

    name = "p2c"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str]:
        free = free_only(candidates, info.model)
        n = len(free)
        if n == 1:
            return free[0], "p2c: only free candidate"
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        a, b = free[i], free[j + 1 if j >= i else j]
        if b.in_flight / b.max_concurrency < a.in_flight / a.max_concurrency:
            a, b = b, a
        return a, one_line(
            f"p2c: {a.in_flight}/{a.max_concurrency} busy vs "
            f"{b.name} {b.in_flight}/{b.max_concurrency}"
        )


class Latency(Learning):
    """Lowest EWMA time to first token per backend:model.

    A backend:model never measured, or not measured for ``stale_after_s``, counts
    as 0 s so it gets tried (explore); ties go to the less loaded.
    """

    name = "latency"

    def __init__(self, ewma_alpha: float = 0.3, stale_after_s: float = 60.0) -> None:
        self.stats = RouteStats(ewma_alpha)
        self.stale_after_s = stale_after_s

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str]:
        stats = self.stats
        fresh_since = now - self.stale_after_s
        chosen: BackendState | None = None
        best = (math.inf, math.inf)
        for b in free_only(candidates, info.model):
            s = stats.get(b.name, info.model)
            t = s.ttft if s is not None and s.ttft is not None and s.ttft_at >= fresh_since else 0.0
            key = (t, b.in_flight / b.max_concurrency)
            if key < best:
                best, chosen = key, b
        assert chosen is not None
        if best[0] == 0.0:
            return chosen, f"latency: exploring (no recent ttft), {chosen.in_flight} in flight"
        return chosen, f"latency: ewma ttft {best[0]:.3f}s, {chosen.in_flight} in flight"


POLICIES: Mapping[str, Callable[..., Policy]] = {
    CorralPolicy.name: CorralPolicy,
    Latency.name: Latency,
    LeastConn.name: LeastConn,
    PowerOfTwo.name: PowerOfTwo,
    RoundRobin.name: RoundRobin,
    ScorePolicy.name: ScorePolicy,
    Weighted.name: Weighted,
}


def make_policy(name: str, options: Mapping[str, Any] | None = None) -> Policy:
    """Build the policy ``name`` with its ``options`` (from config).

    Every policy accepts the affinity options (``prefix_affinity``,
    ``session_affinity``, ``affinity_abs``, ...): ``corral`` has affinity built in
    (on by default); any other policy is wrapped in :class:`Sticky` when either
    ``prefix_affinity`` or ``session_affinity`` is true. An option nobody accepts
    is a ValueError that names it.
    """
    try:
        factory = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown routing policy {name!r} (known: {known})") from None
    own = _parameters(factory)
    mine: dict[str, Any] = {}
    wrap: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key in own:
            mine[key] = value
        elif key in AFFINITY_OPTIONS:
            wrap[key] = value
        else:
            allowed = ", ".join(sorted(set(own) | set(AFFINITY_OPTIONS)))
            raise ValueError(
                f"unknown option {key!r} for routing policy {name!r} (known: {allowed})"
            )
    try:
        policy = factory(**mine)
    except TypeError as exc:  # a value of the wrong kind from config
        raise ValueError(f"bad options for routing policy {name!r}: {exc}") from None
    if wrap.get("prefix_affinity") or wrap.get("session_affinity"):
        wrap.setdefault("prefix_affinity", False)
        wrap.setdefault("session_affinity", False)
        return Sticky(policy, Affinity(**wrap))
    return policy


def _parameters(factory: Callable[..., Policy]) -> tuple[str, ...]:
    params = inspect.signature(factory).parameters.values()
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
