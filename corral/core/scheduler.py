"""The scheduler: the fleet's slots, the model index, the fair queue and the breakers.

Pure: the driver (the live gateway's event loop, or the fleet benchmark's virtual
clock) calls in with the time and holds whatever handle it needs in ``Ticket.token``;
nothing here sleeps or does I/O. A request is bound to a backend only when a
candidate has a free slot for its model (``in_flight < max_concurrency`` and
backend:model under ``max_per_model``), so an engine's own queue stays empty and the
gateway decides who goes next. Until then it waits in the :class:`FairQueue`; every
released slot, recovered backend or resumed queue pumps it.

The routing policy sees every usable candidate (up, enabled, not draining, holding
the model, allowed by the breakers, not already tried) and may choose to wait for a
busy one (see :mod:`corral.core.policies`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, cast

from corral.core.errors import ModelNotFound, NoHealthyBackend
from corral.core.fairqueue import FairQueue, TenantView, Ticket
from corral.core.policies import Policy
from corral.core.types import BackendState, Outcome, RequestInfo, RouteDecision

__all__ = ["Breakers", "Scheduler", "Ticket"]

_FOREVER = float("inf")


class Breakers(Protocol):
    """What the scheduler asks of the circuit breakers (see corral.core.breakers)."""

    def allows(self, backend: str, model: str, now: float) -> bool: ...

    def on_dispatch(self, backend: str, model: str, now: float) -> None: ...

    def record(self, backend: str, model: str, outcome: Outcome, now: float) -> None: ...

    def forget_backend(self, backend: str) -> None: ...


class Scheduler:
    def __init__(
        self,
        policy: Policy | Callable[[str], Policy],
        *,
        max_waiting: int = 1024,
        max_waiting_per_tenant: int | None = None,
        aging_s: float = 30.0,
        breakers: Breakers | None = None,
        keep_alive_s: float = 300.0,
    ) -> None:
        self.queue = FairQueue(max_waiting, max_waiting_per_tenant, aging_s)
        # One policy for every model, or a function choosing one per model group.
        self._policy_for: Callable[[str], Policy]
        if hasattr(policy, "select"):
            single = cast(Policy, policy)
            self._attach(single)
            self._policy_for = lambda model: single
        else:
            chooser = policy
            chosen: dict[str, Policy] = {}

            def policy_for(model: str) -> Policy:
                found = chosen.get(model)
                if found is None:
                    found = chosen[model] = chooser(model)
                    self._attach(found)
                return found

            self._policy_for = policy_for
        # How long a model stays resident after a request (Ollama's default keep-alive),
        # assumed between the probes that read the truth from /api/ps.
        self.keep_alive_s = keep_alive_s
        self.breakers = breakers
        self.backends: dict[str, BackendState] = {}
        self._by_model: dict[str, list[BackendState]] = {}
        self._bound: dict[int, Ticket] = {}
        self._seq = 0
        self.paused = False

    def _attach(self, policy: Policy) -> None:
        """Let a policy see how many requests wait per model (the cost model prices
        the line behind the head it is asked about)."""
        attach = getattr(policy, "attach_queue", None)
        if attach is not None:
            attach(self.queue.waiting_for)

    @property
    def max_waiting(self) -> int:
        return self.queue.max_waiting

    def policy(self, model: str) -> Policy:
        return self._policy_for(model)

    # -- fleet membership -------------------------------------------------------

    def add_backend(self, state: BackendState) -> None:
        self.backends[state.name] = state
        self._reindex()

    def remove_backend(self, name: str) -> None:
        state = self.backends.pop(name, None)
        if state is None:
            return
        for model in state.models:
            self._policy_for(model).on_backend_removed(name)
        if self.breakers is not None:
            self.breakers.forget_backend(name)
        self._reindex()

    def set_models(self, name: str, models: Iterable[str]) -> None:
        """Replace the model list of one backend (normalized names).

        An OpenAI-kind server (vLLM, llama.cpp) serves only what it has loaded, so
        every model it lists counts as resident for good.
        """
        state = self.backends[name]
        new = frozenset(models)
        if new != state.models:
            state.models = new
            self._reindex()
        if state.kind == "openai":
            state.loaded = dict.fromkeys(new, _FOREVER)
        elif state.loaded:
            state.loaded = {m: t for m, t in state.loaded.items() if m in new}

    def probed(
        self,
        name: str,
        now: float,
        *,
        models: Iterable[str] | None = None,
        loaded: dict[str, float] | None = None,
    ) -> bool:
        """A health probe of ``name`` succeeded (with what it read, if anything).

        Returns True when the backend was down: the caller then pumps the queue.
        """
        state = self.backends.get(name)
        if state is None or state.offline:
            return False  # a silent node's engine stays out until its agent is heard
        state.last_check_at = state.last_ok_at = now
        state.consecutive_failures = 0
        state.last_error = None
        if models is not None:
            self.set_models(name, models)
        if loaded is not None:
            self.set_loaded(name, loaded)
        came_back = not state.healthy
        state.healthy = True
        return came_back

    def unreachable(self, name: str, now: float, why: str) -> bool:
        """A probe or a request could not reach ``name``: it takes nothing until a
        probe succeeds. Returns True when it was up until now."""
        state = self.backends.get(name)
        if state is None:
            return False
        state.last_check_at = now
        state.consecutive_failures += 1
        state.last_error = why
        was_up = state.healthy
        state.healthy = False
        return was_up

    def set_offline(self, name: str, why: str) -> bool:
        """The node agent beside ``name`` went silent: take it out of routing until
        `set_online`. Returns True when it was routable until now."""
        state = self.backends.get(name)
        if state is None or state.offline:
            return False
        state.offline = True
        state.last_error = why
        was_up = state.healthy
        state.healthy = False
        return was_up

    def set_online(self, name: str) -> None:
        """Its agent was heard again; the next successful probe makes it healthy."""
        state = self.backends.get(name)
        if state is not None:
            state.offline = False

    def set_loaded(self, name: str, resident: dict[str, float]) -> None:
        """What the backend says is in memory now (Ollama /api/ps), with expiry times."""
        state = self.backends.get(name)
        if state is not None and state.kind == "ollama":
            state.loaded = resident

    def forget_model(self, name: str, model: str) -> None:
        """A backend said it does not hold ``model``: stop sending it there."""
        state = self.backends.get(name)
        if state is not None and model in state.models:
            state.loaded.pop(model, None)
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

    def drain(self, name: str, on: bool = True) -> None:
        """A draining backend takes nothing new and finishes what it has."""
        self.backends[name].draining = on

    def drained(self, name: str) -> bool:
        state = self.backends[name]
        return state.draining and state.in_flight == 0

    def pause(self) -> None:
        """Stop dispatching: new and waiting requests queue until :meth:`resume`."""
        self.paused = True

    def resume(self, now: float) -> list[Ticket]:
        self.paused = False
        return self.pump(now)

    # -- candidates and binding -------------------------------------------------

    def _candidates(
        self, info: RequestInfo, exclude: frozenset[str], now: float
    ) -> tuple[list[BackendState], bool]:
        """Usable holders of the model, and whether any has a free slot.

        Raises ModelNotFound when no backend holds the model and NoHealthyBackend when
        holders exist but none can be used now (down, disabled, draining, breaker open,
        or already tried).
        """
        holders = self._by_model.get(info.model)
        if not holders:
            raise ModelNotFound(info.model)
        model = info.model
        breakers = self.breakers
        usable: list[BackendState] = []
        free = False
        for b in holders:
            if not (b.healthy and b.enabled) or b.draining or b.name in exclude:
                continue
            if breakers is not None and not breakers.allows(b.name, model, now):
                continue
            usable.append(b)
            if not free and b.has_slot(model):
                free = True
        if not usable:
            raise NoHealthyBackend(
                f"no backend can take model {model!r} now "
                f"({self._why_not(holders, model, exclude, now)})"
            )
        return usable, free

    def _why_not(
        self, holders: list[BackendState], model: str, exclude: frozenset[str], now: float
    ) -> str:
        """Why each holder was passed over, for the error message (off the hot path)."""
        counts: dict[str, int] = {}
        for b in holders:
            if b.name in exclude:
                why = "already tried"
            elif b.offline:
                why = "offline"
            elif not b.healthy:
                why = "down"
            elif not b.enabled:
                why = "disabled"
            elif b.draining:
                why = "draining"
            else:
                why = "cooling down after failures"
            counts[why] = counts.get(why, 0) + 1
        return ", ".join(f"{n} {why}" for why, n in counts.items())

    def _try_bind(self, ticket: Ticket, now: float) -> bool:
        info = ticket.info
        usable, free = self._candidates(info, ticket.exclude, now)
        if not free:
            return False
        policy = self._policy_for(info.model)
        choice = policy.select(usable, info, now)
        if choice is None:
            return False
        chosen, reason = choice
        if not chosen.has_slot(info.model):
            return False  # the policy prefers to wait for this busy backend
        chosen.in_flight += 1
        by_model = chosen.in_flight_by_model
        by_model[info.model] = by_model.get(info.model, 0) + 1
        policy.on_dispatch(chosen, info, now)
        if self.breakers is not None:
            self.breakers.on_dispatch(chosen.name, info.model, now)
        exclude = ticket.exclude
        ticket.decision = RouteDecision(
            chosen.name,
            policy.name,
            reason,
            ticket.attempt,
            now - ticket.enqueued_at,
            tuple(sorted(exclude)) if exclude else (),
        )
        ticket.bound_at = now
        self._bound[ticket.seq] = ticket
        self.queue.charge(ticket, prompt_tokens=float(info.prompt_tokens))
        return True

    def submit(
        self,
        info: RequestInfo,
        now: float,
        timeout: float,
        *,
        exclude: frozenset[str] = frozenset(),
        attempt: int = 1,
        token: object = None,
    ) -> Ticket:
        """Admit a request: bound at once (``ticket.decision`` set) or queued.

        A queued ticket may be bindable right away (others were waiting for the same
        model, so it queued behind them): the driver calls :meth:`pump` next.

        Raises ModelNotFound / NoHealthyBackend when it can never be served now, and
        QueueFull when it would have to wait and the queue (or the tenant's share of
        it) is full.
        """
        self._seq += 1
        ticket = Ticket(info, exclude, now, now + timeout, attempt, token, seq=self._seq)
        # Fast path: nothing waits for this model, so binding now jumps nobody. A retry
        # already waited its turn once: it goes first, at the front of its queue.
        retry = attempt > 1
        if not self.paused and (retry or not self.queue.waiting_for(info.model)):
            if self._try_bind(ticket, now):
                return ticket
        else:
            self._candidates(info, exclude, now)  # fail fast when it can never run
        self.queue.push(ticket, front=retry)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Forget a waiting ticket (its client left or its deadline passed)."""
        self.queue.remove(ticket)

    def charge(self, ticket: Ticket, output_tokens: float) -> None:
        """Charge output tokens to the ticket's tenant as they are produced."""
        self.queue.charge(ticket, output_tokens=output_tokens)

    def release(self, ticket: Ticket, outcome: Outcome, now: float) -> list[Ticket]:
        """Give back the ticket's slot; return the waiters that got one as a result."""
        decision = ticket.decision
        if decision is None or self._bound.pop(ticket.seq, None) is None:
            return []
        model = ticket.info.model
        self.queue.settle(ticket, outcome.prompt_tokens, outcome.output_tokens)
        state = self.backends.get(decision.backend)
        if state is not None:
            state.in_flight -= 1
            left = state.in_flight_by_model.get(model, 1) - 1
            if left > 0:
                state.in_flight_by_model[model] = left
            else:
                state.in_flight_by_model.pop(model, None)
            if outcome.ok:
                state.served += 1
                if state.kind == "ollama":
                    # It answered, so the model is resident now and stays so for the
                    # keep-alive (until a probe of /api/ps says otherwise).
                    state.loaded[model] = max(state.loaded.get(model, 0.0), now + self.keep_alive_s)
            else:
                state.failed += 1
            self._policy_for(model).on_complete(state, ticket.info, outcome, now)
        if self.breakers is not None:
            self.breakers.record(decision.backend, model, outcome, now)
        return self.pump(now) if len(self.queue) else []

    # -- waiting ----------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self.queue)

    @property
    def in_flight(self) -> int:
        return len(self._bound)

    def pump(self, now: float) -> list[Ticket]:
        """Bind waiters to free slots in fair order until no more can go."""
        bound: list[Ticket] = []
        if self.paused or not len(self.queue) or not self._any_free():
            return bound
        while True:
            progressed = False
            for head in self.queue.heads(now):
                try:
                    ok = self._try_bind(head, now)
                except (ModelNotFound, NoHealthyBackend):
                    # Its backends are gone or down for now: it waits until they
                    # return or its deadline passes.
                    continue
                if ok:
                    self.queue.pop_head(head)
                    bound.append(head)
                    progressed = True
                    break  # the order changed (counters, heads): look again
            if not progressed or not len(self.queue) or not self._any_free():
                return bound

    def expire(self, now: float) -> list[Ticket]:
        """Remove and return the waiters whose deadline has passed."""
        late = [t for t in self.queue.tickets() if t.deadline <= now]
        for t in late:
            self.queue.remove(t)
        return late

    def next_deadline(self) -> float | None:
        return min((t.deadline for t in self.queue.tickets()), default=None)

    def queue_view(self, now: float) -> list[TenantView]:
        return self.queue.view(now)

    def _any_free(self) -> bool:
        return any(b.in_flight < b.max_concurrency and b.candidate for b in self.backends.values())
