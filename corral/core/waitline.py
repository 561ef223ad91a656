"""Who is waiting for a busy backend, and how long the line for a model is.

The ``corral`` policy may answer "wait for that busy backend" when a slot there is
expected sooner than a load elsewhere. Its estimate of the wait must count the
requests already in line: those it told to wait for the same backend (marked here
until they are dispatched or go stale) and, when the scheduler's queue is wired in
(``queue_depth``), everyone queued for the model, since only the head of a line is
offered to the policy. A long line makes waiting dear and loading one more copy of
the model pay off.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from corral.core.types import BackendState

__all__ = ["WaitLine"]

_STALE_S = 300.0  # forget marks of requests that never came back (expired, cancelled)


class WaitLine:
    __slots__ = ("_by_backend", "_target", "line_share", "queue_depth")

    def __init__(self) -> None:
        self._by_backend: dict[str, OrderedDict[object, float]] = {}  # oldest first
        self._target: dict[object, str] = {}
        # How many requests wait for a model (the scheduler's queue), when wired.
        self.queue_depth: Callable[[str], int] | None = None
        # Requests in line per resident slot, for the decision under way.
        self.line_share = 0.0

    def measure(self, candidates: Sequence[BackendState], model: str, now: float) -> None:
        """Set ``line_share``: requests queued behind this one per resident slot."""
        depth = self.queue_depth
        line = depth(model) - 1 if depth is not None else 0
        if line <= 0:
            self.line_share = 0.0
            return
        slots = 0
        for b in candidates:
            if b.loaded.get(model, -1.0) > now or b.kind == "openai":
                slots += min(b.max_per_model or b.max_concurrency, b.max_concurrency)
        self.line_share = line / max(slots, 1)

    def ahead(self, b: BackendState, key: object) -> float:
        """Requests expected to take a slot of ``b`` before request ``key``."""
        waiters = self._by_backend.get(b.name)
        marked = 0.0 if waiters is None else float(len(waiters) - (key in waiters))
        if self.line_share:
            slots = min(b.max_per_model or b.max_concurrency, b.max_concurrency)
            return max(marked, self.line_share * slots)
        return marked

    def mark(self, backend: str, key: object, now: float) -> None:
        """Request ``key`` was told to wait for ``backend``."""
        old = self._target.get(key)
        if old == backend:
            return
        if old is not None:
            self._by_backend[old].pop(key, None)
        self._target[key] = backend
        waiters = self._by_backend.setdefault(backend, OrderedDict())
        waiters[key] = now
        while waiters:
            k, at = next(iter(waiters.items()))
            if now - at < _STALE_S:
                break
            del waiters[k]
            self._target.pop(k, None)

    def dispatched(self, key: object) -> None:
        target = self._target.pop(key, None)
        if target is not None:
            waiters = self._by_backend.get(target)
            if waiters is not None:
                waiters.pop(key, None)

    def forget(self, backend: str) -> None:
        for key in self._by_backend.pop(backend, {}):
            self._target.pop(key, None)
