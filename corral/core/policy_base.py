"""What every routing policy shares: the protocol, no-op hooks and learned statistics.

A policy chooses among the candidates the scheduler found able to serve a request:
up, enabled, not draining, holding the model, allowed by the breakers and not already
tried. At least one candidate has a free slot (``has_slot(model)``). A policy may
also answer "wait": return None, or a candidate without a free slot, when waiting for
a busy backend is expected to be faster than the free ones (a free node would have to
load the model first); the request then stays queued until a slot frees up.

Kept apart from :mod:`corral.core.policies` (the registry) so the policy modules can
import these without importing each other; ``policies`` re-exports all of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from corral.core.types import BackendState, Outcome, RequestInfo

__all__ = ["Hooks", "Learning", "ModelStats", "Policy", "RouteStats", "free_only", "one_line"]


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


class Learning(Hooks):
    """Hooks of a policy that learns per backend:model figures (``self.stats``)."""

    stats: RouteStats

    def on_complete(
        self, backend: BackendState, info: RequestInfo, outcome: Outcome, now: float
    ) -> None:
        self.stats.observe(backend.name, info.model, outcome, now)

    def on_backend_removed(self, name: str) -> None:
        self.stats.forget(name)


def free_only(candidates: Sequence[BackendState], model: str) -> Sequence[BackendState]:
    """The candidates with a free slot for ``model`` (the input itself when all are)."""
    for b in candidates:
        if not b.has_slot(model):
            return [c for c in candidates if c.has_slot(model)]
    return candidates


def one_line(reason: str, limit: int = 159) -> str:
    """A reason fit for an HTTP header: one ASCII line, shorter than 160 characters.

    Backend names come from config and may hold anything; the header must not.
    """
    if not reason.isascii() or not reason.isprintable():
        reason = "".join(c if " " <= c <= "~" else "?" for c in reason)
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


class ModelStats:
    """What was learned about one backend:model from finished requests.

    Each figure is an EWMA (None until first observed) plus when it was last fed, so
    a policy can distrust stale figures. ``success`` starts optimistic at 1.0.
    """

    __slots__ = (
        "last_ok",
        "load",
        "service",
        "success",
        "success_at",
        "ttft",
        "ttft_at",
        "warm_ttft",
    )

    def __init__(self) -> None:
        self.ttft: float | None = None  # as observed, model loads included
        self.ttft_at = -math.inf
        self.warm_ttft: float | None = None  # without the load the backend reported
        self.service: float | None = None  # dispatch to end
        self.load: float | None = None  # reported load times that were real loads
        self.success = 1.0
        self.success_at = -math.inf
        self.last_ok = -math.inf  # when a request last ended well (model surely resident)


class RouteStats:
    """Per backend:model statistics, fed from ``on_complete``.

    ``alpha`` is the EWMA weight of a new observation. Loads shorter than
    ``min_load_s`` are Ollama's bookkeeping for a resident model, not a load.
    """

    __slots__ = ("alpha", "by_backend", "by_model", "min_load_s")

    def __init__(self, alpha: float = 0.3, min_load_s: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"ewma alpha must be in (0, 1], not {alpha}")
        self.alpha = alpha
        self.min_load_s = min_load_s
        # backend -> model -> figures, and the same objects by model -> backend: a
        # decision looks up its model once, then one dict lookup per candidate.
        self.by_backend: dict[str, dict[str, ModelStats]] = {}
        self.by_model: dict[str, dict[str, ModelStats]] = {}

    def get(self, backend: str, model: str) -> ModelStats | None:
        models = self.by_backend.get(backend)
        return None if models is None else models.get(model)

    def of(self, backend: str, model: str) -> ModelStats:
        models = self.by_backend.get(backend)
        if models is None:
            models = self.by_backend[backend] = {}
        stats = models.get(model)
        if stats is None:
            stats = models[model] = ModelStats()
            self.by_model.setdefault(model, {})[backend] = stats
        return stats

    def forget(self, backend: str) -> None:
        for model in self.by_backend.pop(backend, {}):
            backends = self.by_model.get(model)
            if backends is not None:
                backends.pop(backend, None)

    def observe(self, backend: str, model: str, outcome: Outcome, now: float) -> ModelStats:
        s = self.of(backend, model)
        a = self.alpha
        s.success += a * ((1.0 if outcome.ok else 0.0) - s.success)
        s.success_at = now
        if not outcome.ok:
            return s
        s.last_ok = now
        s.service = _ewma(s.service, outcome.duration_s, a)
        load = outcome.load_s
        if load is not None and load >= self.min_load_s:
            s.load = _ewma(s.load, load, a)
        ttft = outcome.ttft_s
        if ttft is not None:
            s.ttft = _ewma(s.ttft, ttft, a)
            s.ttft_at = now
            warm = max(0.0, ttft - (load or 0.0))
            s.warm_ttft = _ewma(s.warm_ttft, warm, a)
        return s


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else old + alpha * (new - old)
