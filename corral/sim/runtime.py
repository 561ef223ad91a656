"""What both live drivers share: a pure event model on the asyncio clock.

:class:`LoopRuntime` is the only place that reads a clock; the pure models
(``model.py``, ``vllm_model.py``) see plain floats. It arms one timer at the model's
``next_event_time()``, hands each request the events for it through an :class:`Inbox`,
and keeps the fault state and counters. :class:`~corral.sim.node.NodeRuntime` (Ollama)
and :class:`~corral.sim.vllm_node.VllmRuntime` (vLLM) add what their server keeps
beside the scheduling.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from corral.sim.faults import FaultDice, Faults
from corral.sim.model_types import Admission, Event, EventKind, ReqId, Request

__all__ = ["Counters", "EventModel", "Inbox", "LoopRuntime"]


class Inbox:
    """Events for one request; the handler awaits them in batches."""

    __slots__ = ("_events", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: list[Event] = []
        self._waiter: asyncio.Future[None] | None = None

    def push(self, event: Event) -> None:
        self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> list[Event]:
        while not self._events:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        out, self._events = self._events, []
        return out

    async def done(self) -> Event:
        """Wait for the DONE event, skipping token progress."""
        while True:
            for ev in await self.get():
                if ev.kind is EventKind.DONE:
                    return ev


@dataclass
class Counters:
    requests: int = 0  # inference requests received
    completed: int = 0  # answered in full
    cancelled: int = 0  # the client left first
    errors: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "errors": dict(sorted(self.errors.items())),
        }


class EventModel(Protocol):
    """What a driver needs of a pure model (both :class:`NodeModel` and :class:`VllmModel`)."""

    def next_event_time(self) -> float | None: ...

    def submit(self, req: Request, now: float) -> Admission: ...

    def cancel(self, req_id: ReqId, now: float) -> bool: ...

    def advance(self, now: float) -> list[Event]: ...

    def set_slowdown(self, factor: float, now: float) -> None: ...


M = TypeVar("M", bound=EventModel)


class LoopRuntime(Generic[M]):
    """One pure model on the running loop's clock, with faults and counters."""

    def __init__(self, model: M, faults: Faults | None = None, seed: int = 0) -> None:
        self.loop = asyncio.get_running_loop()
        self.model = model
        self.faults = faults or Faults()
        self.seed = seed
        self.dice = FaultDice(seed)
        self.counters = Counters()
        self._t0 = self.loop.time()
        self._ids = itertools.count(1)
        self._inboxes: dict[ReqId, Inbox] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = math.inf
        self._closed = False
        if self.faults.slow != 1.0:
            model.set_slowdown(self.faults.slow, self.now())

    # --------------------------------------------------------------- clock
    def now(self) -> float:
        return self.loop.time() - self._t0

    def next_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------ requests
    def _open(self, req: Request, now: float) -> tuple[Admission, Inbox]:
        """Submit ``req`` to the model with an inbox ready for its events."""
        inbox = Inbox(self.loop)
        self._inboxes[req.req_id] = inbox
        return self.model.submit(req, now), inbox

    def cancel(self, req_id: ReqId) -> None:
        raise NotImplementedError

    # -------------------------------------------------------------- driver
    def _settle(self) -> None:
        """Catch up after a change from outside (a request, a fault): re-arm the timer."""
        self._kick()

    def _advance(self, at: float = -math.inf) -> None:
        """Run the model to now (or ``at``, if later), deliver its events, re-arm the timer."""
        for ev in self.model.advance(max(self.now(), at)):
            if ev.req_id is None:
                continue
            self._observe(ev)
            inbox = self._inboxes.get(ev.req_id)
            if inbox is not None:
                inbox.push(ev)
                if ev.kind is EventKind.DONE:
                    del self._inboxes[ev.req_id]
        self._kick()

    def _observe(self, ev: Event) -> None:
        """Look at a request's event before its handler gets it (metrics, bookkeeping)."""

    def _kick(self) -> None:
        """Arm the timer for the model's next event (earlier wins)."""
        if self._closed:
            return
        t = self.model.next_event_time()
        if t is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_when = None, math.inf
            return
        when = self._t0 + t
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        # asyncio may run a timer up to one clock resolution early: it is due all the same.
        due = self._timer_when - self._t0
        self._timer, self._timer_when = None, math.inf
        self._advance(due)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -------------------------------------------------------------- faults
    def _refusing_fault(self) -> str | None:
        """The fault (``busy``, ``error_rate``) that turns an inference request away
        before any work, counted; None when none does."""
        if self.faults.busy:
            self.counters.errors["busy"] += 1
            return "busy"
        if self.dice.roll(self.faults.error_rate):
            self.counters.errors["error_rate"] += 1
            return "error_rate"
        return None

    def set_faults(self, faults: Faults) -> None:
        if faults.slow != self.faults.slow:
            self.model.set_slowdown(faults.slow, self.now())
        self.faults = faults
        self._settle()

    def reset(self) -> None:
        """Clear faults, counters and the model's statistics."""
        self.set_faults(Faults())
        self.counters = Counters()
        self._clear_stats()
        self.dice = FaultDice(self.seed)

    def _clear_stats(self) -> None:
        raise NotImplementedError

    # --------------------------------------------------------------- views
    def state(self) -> dict[str, Any]:
        """What ``GET /_sim/state`` answers."""
        raise NotImplementedError
