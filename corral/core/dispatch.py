"""Slots and the wait queue: who may send a request to which backend, and when.

Pure: the gateway calls in with the time and holds the futures; nothing here
sleeps or does I/O. A request is bound to a backend only when a candidate has a free
slot (``in_flight < max_concurrency``); otherwise it waits in one FIFO queue, and
every slot released or backend recovered pumps the queue. A waiter only takes a slot
on a backend that holds its model, so one busy model never blocks another
(no head-of-line blocking across models).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from corral.core.errors import ModelNotFound, NoHealthyBackend, QueueFull
from corral.core.policies import Policy
from corral.core.types import BackendState, RequestInfo, RouteDecision

__all__ = ["Dispatcher", "Waiter"]


@dataclass(slots=True, eq=False)
class Waiter:
    """A request waiting for a slot. ``token`` is the driver's handle (a future)."""

    info: RequestInfo
    exclude: frozenset[str]
    enqueued_at: float
    deadline: float
    attempt: int = 1
    token: object = None
    decision: RouteDecision | None = None
    key: int = 0


class Dispatcher:
    """Holds the fleet's slots, the model index and the FIFO of waiters."""

    def __init__(self, policy: Policy, max_waiting: int) -> None:
        self.policy = policy
        self.max_waiting = max_waiting
        self.backends: dict[str, BackendState] = {}
        self._by_model: dict[str, list[BackendState]] = {}
        self._waiting: dict[int, Waiter] = {}
        self._seq = 0

    # -- fleet membership -------------------------------------------------------

    def add_backend(self, state: BackendState) -> None:
        self.backends[state.name] = state
        self._reindex()

    def remove_backend(self, name: str) -> None:
        if self.backends.pop(name, None) is not None:
            self.policy.on_backend_removed(name)
            self._reindex()

    def set_models(self, name: str, models: Iterable[str]) -> None:
        """Replace the model list of one backend (normalized names)."""
        state = self.backends[name]
        new = frozenset(models)
        if new != state.models:
            state.models = new
            self._reindex()

    def forget_model(self, name: str, model: str) -> None:
        """A backend said it does not hold ``model``: stop sending it there."""
        state = self.backends.get(name)
        if state is not None and model in state.models:
            self.set_models(name, state.models - {model})

    def _reindex(self) -> None:
        index: dict[str, list[BackendState]] = {}
        for state in self.backends.values():
            for model in state.models:
                index.setdefault(model, []).append(state)
        self._by_model = index

    def holders(self, model: str) -> list[BackendState]:
        return self._by_model.get(model, [])

    def models(self) -> list[str]:
        return sorted(self._by_model)

    # -- binding ----------------------------------------------------------------

    def bind(
        self, info: RequestInfo, exclude: frozenset[str] = frozenset(), attempt: int = 1
    ) -> RouteDecision | None:
        """Take a slot on the best free candidate, or return None when all are busy.

        Raises ModelNotFound when no backend holds the model and NoHealthyBackend when
        holders exist but none can be used now (down, disabled, or already tried).
        """
        holders = self._by_model.get(info.model)
        if not holders:
            raise ModelNotFound(info.model)
        free: list[BackendState] = []
        usable = False
        for b in holders:
            if b.healthy and b.enabled and b.name not in exclude:
                usable = True
                if b.in_flight < b.max_concurrency:
                    free.append(b)
        if not usable:
            raise NoHealthyBackend(
                f"no healthy backend for model {info.model!r} ({len(holders)} hold it, none is up)"
            )
        if not free:
            return None
        chosen, reason = self.policy.select(free, info)
        chosen.in_flight += 1
        return RouteDecision(
            backend=chosen.name,
            policy=self.policy.name,
            reason=reason,
            attempt=attempt,
            tried=tuple(sorted(exclude)),
        )

    def release(self, name: str, info: RequestInfo, ok: bool, now: float) -> list[Waiter]:
        """Give back a slot; return the waiters that got one as a result."""
        state = self.backends.get(name)
        if state is not None:
            state.in_flight -= 1
            if ok:
                state.served += 1
            else:
                state.failed += 1
            self.policy.on_complete(state, info, ok, now)
        return self.pump(now) if self._waiting else []

    # -- waiting ----------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enqueue(
        self,
        info: RequestInfo,
        exclude: frozenset[str],
        now: float,
        timeout: float,
        attempt: int = 1,
        token: object = None,
    ) -> Waiter:
        if len(self._waiting) >= self.max_waiting:
            raise QueueFull(
                f"the gateway queue is full ({self.max_waiting} waiting); try again shortly",
                retry_after=1.0,
            )
        self._seq += 1
        waiter = Waiter(info, exclude, now, now + timeout, attempt, token, key=self._seq)
        self._waiting[self._seq] = waiter
        return waiter

    def cancel(self, waiter: Waiter) -> None:
        self._waiting.pop(waiter.key, None)

    def pump(self, now: float) -> list[Waiter]:
        """Bind as many waiters as free slots allow, oldest first."""
        bound: list[Waiter] = []
        if not self._any_free():
            return bound
        for waiter in self._waiting.values():
            try:
                decision = self.bind(waiter.info, waiter.exclude, waiter.attempt)
            except (ModelNotFound, NoHealthyBackend):
                # Its backends are gone or down for now: it waits until they return or
                # its deadline passes.
                continue
            if decision is None:
                continue
            waiter.decision = RouteDecision(
                backend=decision.backend,
                policy=decision.policy,
                reason=decision.reason,
                attempt=decision.attempt,
                queued_s=now - waiter.enqueued_at,
                tried=decision.tried,
            )
            bound.append(waiter)
            if not self._any_free():
                break
        for waiter in bound:  # removed after the walk: no copy of the queue per release
            del self._waiting[waiter.key]
        return bound

    def _any_free(self) -> bool:
        return any(b.in_flight < b.max_concurrency and b.routable for b in self.backends.values())
