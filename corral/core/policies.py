"""Routing policies: a tiny protocol and a registry of them by name.

A policy chooses among the candidates the scheduler found able to serve a request:
up, enabled, not draining, holding the model, allowed by the breakers and not already
tried. At least one candidate has a free slot (``has_slot(model)``). A policy may
also answer "wait": return None, or a candidate without a free slot, when waiting for
a busy backend is expected to be faster than the free ones (a free node would have to
load the model first); the request then stays queued until a slot frees up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from corral.core.types import BackendState, Outcome, RequestInfo

__all__ = ["POLICIES", "LeastConn", "Policy", "RoundRobin", "free_only", "make_policy"]


class Policy(Protocol):
    """Choose one backend for a request, or wait."""

    name: str

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str] | None:
        """Return the chosen backend and a short reason, or None to keep waiting."""
        ...

    def on_dispatch(self, backend: BackendState, info: RequestInfo, now: float) -> None:
        """Called when a request is bound to ``backend``."""
        ...

    def on_complete(
        self, backend: BackendState, info: RequestInfo, outcome: Outcome, now: float
    ) -> None:
        """Called when a request bound by this policy ends."""
        ...

    def on_backend_removed(self, name: str) -> None:
        """Called when a backend leaves the fleet."""
        ...


class Hooks:
    """No-op defaults for the optional hooks."""

    def on_dispatch(self, backend: BackendState, info: RequestInfo, now: float) -> None:
        return None

    def on_complete(
        self, backend: BackendState, info: RequestInfo, outcome: Outcome, now: float
    ) -> None:
        return None

    def on_backend_removed(self, name: str) -> None:
        return None


def free_only(candidates: Sequence[BackendState], model: str) -> Sequence[BackendState]:
    """The candidates with a free slot for ``model`` (the input itself when all are)."""
    for b in candidates:
        if not b.has_slot(model):
            return [c for c in candidates if c.has_slot(model)]
    return candidates


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


POLICIES: Mapping[str, Callable[[], Policy]] = {
    LeastConn.name: LeastConn,
    RoundRobin.name: RoundRobin,
}


def make_policy(name: str) -> Policy:
    try:
        factory = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown routing policy {name!r} (known: {known})") from None
    return factory()
