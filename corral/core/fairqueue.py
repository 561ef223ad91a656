"""The gateway's one fair queue: per-tenant, weighted by tokens served (VTC).

Pure: time is passed in. Each tenant has a virtual-token counter: the tokens it has
been served divided by its weight (input tokens + 2 x output tokens, charged as they
are produced), as in the Virtual Token Counter scheduler (Sheng et al., OSDI'24). The
queue always offers the backlogged tenant with the smallest counter first, so over
any busy period each tenant's weight-normalised service stays within a bounded
distance of the others'. A tenant that returns from idle has its counter lifted to
the smallest backlogged counter, so idling banks no credit, and an idle cluster lets
anyone burst (work-conserving).

Priority classes sit above the counters: a request's class is its ``priority`` plus
one step for every ``aging_s`` seconds it has waited, up to the highest class
waiting, so a low class is never starved (and aging never reorders one class).
Requests are queued per (tenant, model), so a model with no free backend never
blocks another model's requests (no head-of-line blocking).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from corral.core.errors import QueueFull
from corral.core.types import RequestInfo, RouteDecision

__all__ = ["OUTPUT_TOKEN_COST", "FairQueue", "TenantView", "Ticket"]

OUTPUT_TOKEN_COST = 2.0  # VTC: an output token costs twice an input token


@dataclass(slots=True, eq=False)
class Ticket:
    """One request in the scheduler: waiting, then bound. ``token`` is the driver's."""

    info: RequestInfo
    exclude: frozenset[str]
    enqueued_at: float
    deadline: float
    attempt: int = 1
    token: object = None
    decision: RouteDecision | None = None
    seq: int = 0
    charged_prompt: float = 0.0  # tokens charged to the tenant so far
    charged_output: float = 0.0
    bound_at: float | None = None


@dataclass(slots=True, eq=False)
class _Tenant:
    name: str
    weight: float = 1.0
    counter: float = 0.0
    waiting: int = 0
    queues: dict[str, deque[Ticket]] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class TenantView:
    tenant: str
    weight: float
    counter: float
    waiting: int
    by_model: dict[str, int]
    oldest_wait_s: float


class FairQueue:
    def __init__(
        self, max_waiting: int, max_per_tenant: int | None = None, aging_s: float = 30.0
    ) -> None:
        self.max_waiting = max_waiting
        self.max_per_tenant = max_per_tenant
        self.aging_s = aging_s
        self._tenants: dict[str, _Tenant] = {}
        self._waiting = 0
        self._by_model: dict[str, int] = {}
        self._last_counter = 0.0  # counter of the tenant served last (VTC's lift when idle)

    def __len__(self) -> int:
        return self._waiting

    def waiting_for(self, model: str) -> int:
        return self._by_model.get(model, 0)

    # -- tenants and charges ----------------------------------------------------

    def _tenant(self, info: RequestInfo) -> _Tenant:
        t = self._tenants.get(info.tenant)
        if t is None:
            t = self._tenants[info.tenant] = _Tenant(info.tenant, info.weight, self._last_counter)
        elif info.weight > 0:
            t.weight = info.weight
        return t

    def charge(
        self, ticket: Ticket, prompt_tokens: float = 0.0, output_tokens: float = 0.0
    ) -> None:
        """Add service to the ticket's tenant (deltas, in tokens)."""
        if not prompt_tokens and not output_tokens:
            return
        t = self._tenant(ticket.info)
        ticket.charged_prompt += prompt_tokens
        ticket.charged_output += output_tokens
        t.counter += (prompt_tokens + OUTPUT_TOKEN_COST * output_tokens) / max(t.weight, 1e-9)
        self._last_counter = t.counter

    def settle(self, ticket: Ticket, prompt_tokens: int, output_tokens: int) -> None:
        """Correct the charges to the counts the backend reported at the end."""
        self.charge(
            ticket,
            max(0.0, prompt_tokens - ticket.charged_prompt),
            max(0.0, output_tokens - ticket.charged_output),
        )

    def counter(self, tenant: str) -> float:
        t = self._tenants.get(tenant)
        return t.counter if t is not None else 0.0

    # -- queueing ---------------------------------------------------------------

    def push(self, ticket: Ticket, *, front: bool = False) -> None:
        """Queue a ticket at the back of its (tenant, model) queue, or at the front
        (a retry: it already waited its turn once)."""
        if self._waiting >= self.max_waiting:
            raise QueueFull(
                f"the gateway queue is full ({self.max_waiting} waiting); try again shortly",
                retry_after=1.0,
            )
        t = self._tenant(ticket.info)
        if self.max_per_tenant is not None and t.waiting >= self.max_per_tenant:
            raise QueueFull(
                f"too many of your requests are waiting ({t.waiting}, the limit per "
                f"tenant is {self.max_per_tenant}); wait for some to finish",
                retry_after=1.0,
                status=429,
            )
        if t.waiting == 0:
            backlogged = [o.counter for o in self._tenants.values() if o.waiting]
            floor = min(backlogged) if backlogged else self._last_counter
            t.counter = max(t.counter, floor)
        model = ticket.info.model
        q = t.queues.setdefault(model, deque())
        if front:
            q.appendleft(ticket)
        else:
            q.append(ticket)
        t.waiting += 1
        self._waiting += 1
        self._by_model[model] = self._by_model.get(model, 0) + 1

    def remove(self, ticket: Ticket) -> bool:
        t = self._tenants.get(ticket.info.tenant)
        if t is None:
            return False
        q = t.queues.get(ticket.info.model)
        if not q:
            return False
        try:
            q.remove(ticket)
        except ValueError:
            return False
        self._dropped(t, ticket.info.model, q)
        return True

    def pop_head(self, ticket: Ticket) -> None:
        """Remove ``ticket``, which is the head of its (tenant, model) queue."""
        t = self._tenants[ticket.info.tenant]
        q = t.queues[ticket.info.model]
        q.popleft()
        self._dropped(t, ticket.info.model, q)

    def _dropped(self, t: _Tenant, model: str, q: deque[Ticket]) -> None:
        if not q:
            del t.queues[model]
        t.waiting -= 1
        self._waiting -= 1
        left = self._by_model[model] - 1
        if left:
            self._by_model[model] = left
        else:
            del self._by_model[model]

    def heads(self, now: float) -> list[Ticket]:
        """The head of every (tenant, model) queue, best first.

        Best = highest aged priority class, then smallest tenant counter, then oldest.
        """
        heads = [(t, q[0]) for t in self._tenants.values() if t.waiting for q in t.queues.values()]
        if not heads:
            return []
        # Aging lifts a waiting request towards the highest class waiting, never past
        # it: once level, the token counters decide, so an old request of a heavy
        # tenant cannot jump its own class and starve lighter tenants.
        top = max(head.info.priority for _, head in heads)
        aging = self.aging_s
        keyed: list[tuple[float, float, int, Ticket]] = []
        for t, head in heads:
            klass = head.info.priority
            if klass < top and aging > 0:
                klass = min(top, klass + int((now - head.enqueued_at) // aging))
            keyed.append((-klass, t.counter, head.seq, head))
        keyed.sort(key=lambda k: k[:3])
        return [k[3] for k in keyed]

    def tickets(self) -> Iterator[Ticket]:
        for t in self._tenants.values():
            for q in t.queues.values():
                yield from q

    def view(self, now: float) -> list[TenantView]:
        out = []
        for t in self._tenants.values():
            if not t.waiting:
                continue
            oldest = min(q[0].enqueued_at for q in t.queues.values())
            out.append(
                TenantView(
                    t.name,
                    t.weight,
                    t.counter,
                    t.waiting,
                    {m: len(q) for m, q in t.queues.items()},
                    now - oldest,
                )
            )
        return sorted(out, key=lambda v: v.tenant)

    def forget_idle(self, keep: int = 10_000) -> None:
        """Drop idle tenants beyond ``keep`` (bounded memory for many tenants)."""
        if len(self._tenants) <= keep:
            return
        for name in [n for n, t in self._tenants.items() if not t.waiting][
            : len(self._tenants) - keep
        ]:
            del self._tenants[name]
