"""Routing policies: a tiny protocol and a registry of them by name.

A policy only chooses among candidates the dispatcher already found able to serve
(healthy, enabled, holding the model, with a free slot). Later policies (cost model,
prefix affinity) plug in here without touching the dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from corral.core.types import BackendState, RequestInfo

__all__ = ["POLICIES", "LeastConn", "Policy", "RoundRobin", "make_policy"]


class Policy(Protocol):
    """Choose one backend among ready candidates (never empty)."""

    name: str

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo
    ) -> tuple[BackendState, str]:
        """Return the chosen backend and a short reason."""
        ...

    def on_complete(self, backend: BackendState, info: RequestInfo, ok: bool, now: float) -> None:
        """Called when a request bound by this policy ends."""
        ...

    def on_backend_removed(self, name: str) -> None:
        """Called when a backend leaves the fleet."""
        ...


class _Hooks:
    """No-op defaults for the optional hooks."""

    def on_complete(self, backend: BackendState, info: RequestInfo, ok: bool, now: float) -> None:
        return None

    def on_backend_removed(self, name: str) -> None:
        return None


class RoundRobin(_Hooks):
    """Rotate through candidates, one counter per model."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo
    ) -> tuple[BackendState, str]:
        i = self._next.get(info.model, 0)
        self._next[info.model] = i + 1
        chosen = candidates[i % len(candidates)]
        return chosen, f"round_robin turn {i % len(candidates) + 1} of {len(candidates)}"


class LeastConn(_Hooks):
    """Fewest requests in flight relative to capacity; ties rotate.

    Comparing the ratio (not the raw count) keeps a 16-slot node from being
    treated like a 1-slot one.
    """

    name = "least_conn"

    def __init__(self) -> None:
        self._turn = 0

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo
    ) -> tuple[BackendState, str]:
        if len(candidates) == 1:
            b = candidates[0]
            return b, f"least_conn: only candidate ({b.in_flight}/{b.max_concurrency} busy)"
        best: list[BackendState] = []
        best_load = 2.0**31
        for b in candidates:
            load = b.in_flight / b.max_concurrency
            if load < best_load:
                best_load = load
                best = [b]
            elif load == best_load:
                best.append(b)
        self._turn += 1
        chosen = best[self._turn % len(best)]
        return chosen, (
            f"least_conn: {chosen.in_flight}/{chosen.max_concurrency} busy, "
            f"least of {len(candidates)}"
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
