"""The live driver: one pure :class:`NodeModel` on the asyncio clock.

The runtime owns the node's state that is not scheduling (what is on disk, blobs,
faults, counters) and a timer armed at the model's ``next_event_time()``. Handlers
submit requests and read the events for theirs from an :class:`Inbox`. This is the only
place that reads a clock; ``model.py`` sees plain floats.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from corral.sim.catalogue import Catalogue, ModelSpec, normalize_name
from corral.sim.faults import RUNNER_CRASH, FaultDice, Faults
from corral.sim.model import (
    Admission,
    Event,
    EventKind,
    NodeModel,
    NodeStats,
    ReqId,
    Request,
)
from corral.sim.wire import BUSY_MESSAGE

__all__ = ["RUNTIME", "Counters", "Inbox", "ModelMeta", "NodeRuntime"]


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


@dataclass
class ModelMeta:
    """What /api/show and /api/tags need beyond the spec."""

    modified_at: float
    system: str = ""
    template: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    parent: str = ""


class NodeRuntime:
    def __init__(
        self,
        model: NodeModel,
        catalogue: Catalogue,
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.model = model
        self.catalogue = catalogue
        self.faults = faults or Faults()
        self.seed = seed
        self.dice = FaultDice(seed)
        self.counters = Counters()
        self.meta: dict[str, ModelMeta] = {}
        self.blobs: dict[str, int] = {}  # digest -> size; the bytes are not kept
        self._t0 = self.loop.time()
        self._ids = itertools.count(1)
        self._inboxes: dict[ReqId, Inbox] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = math.inf
        self._closed = False
        for spec in model.present():
            self.meta[spec.name] = ModelMeta(modified_at=time.time())
        if self.faults.slow != 1.0:
            model.set_slowdown(self.faults.slow, self.now())

    # --------------------------------------------------------------- clock
    def now(self) -> float:
        return self.loop.time() - self._t0

    def epoch(self, t: float) -> float:
        """Wall-clock seconds for model time ``t`` (inf stays inf)."""
        return time.time() + (t - self.now()) if math.isfinite(t) else math.inf

    def next_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------ requests
    def submit(self, req: Request) -> tuple[Admission, Inbox | None]:
        inbox = Inbox(self.loop)
        self._inboxes[req.req_id] = inbox
        adm = self.model.submit(req, self.now())
        if adm in (Admission.BUSY, Admission.NOT_FOUND):
            del self._inboxes[req.req_id]
            return adm, None
        self._kick()
        return adm, inbox

    def cancel(self, req_id: ReqId) -> None:
        self._inboxes.pop(req_id, None)
        self.model.cancel(req_id, self.now())
        self._kick()

    # -------------------------------------------------------------- driver
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
        now = max(self.now(), self._timer_when - self._t0)
        self._timer, self._timer_when = None, math.inf
        for ev in self.model.advance(now):
            if ev.req_id is None:
                continue
            inbox = self._inboxes.get(ev.req_id)
            if inbox is not None:
                inbox.push(ev)
                if ev.kind is EventKind.DONE:
                    del self._inboxes[ev.req_id]
        self._kick()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -------------------------------------------------------------- models
    def spec(self, name: str) -> ModelSpec | None:
        return self.model.spec(name)

    def add_model(self, spec: ModelSpec, meta: ModelMeta | None = None) -> None:
        self.model.add_model(spec)
        self.meta[spec.name] = meta or ModelMeta(modified_at=time.time())

    def remove_model(self, name: str) -> bool:
        self.meta.pop(normalize_name(name), None)
        return self.model.remove_model(name)

    def preload(self, name: str) -> None:
        self.model.preload(name, self.now())
        self._kick()

    # -------------------------------------------------------------- faults
    def refusal(self) -> tuple[int, str] | None:
        """(status, message) when a fault turns an inference request away before any work."""
        if self.faults.busy:
            self.counters.errors["busy"] += 1
            return 503, BUSY_MESSAGE
        if self.dice.roll(self.faults.error_rate):
            self.counters.errors["error_rate"] += 1
            return 500, RUNNER_CRASH
        return None

    def set_faults(self, faults: Faults) -> None:
        if faults.slow != self.faults.slow:
            self.model.set_slowdown(faults.slow, self.now())
        self.faults = faults
        self._kick()

    def reset(self) -> None:
        """Clear faults and counters (models stay as they are)."""
        self.set_faults(Faults())
        self.counters = Counters()
        self.model.stats = NodeStats()
        self.dice = FaultDice(self.seed)

    def state(self) -> dict[str, Any]:
        now = self.now()
        loaded = []
        for info in self.model.runners(now):
            loaded.append(
                {
                    "name": info.model,
                    "state": info.state,
                    "num_ctx": info.num_ctx,
                    "size_vram": info.size_vram,
                    "keep_alive": None if math.isinf(info.keep_alive) else info.keep_alive,
                    "expires_in": None
                    if math.isinf(info.expires_at)
                    else round(info.expires_at - now, 3),
                    "active": info.active,
                    "waiting": info.waiting,
                }
            )
        cfg = self.model.config
        return {
            "models": {
                "present": sorted(s.name for s in self.model.present()),
                "loaded": loaded,
            },
            "in_flight": self.model.in_flight,
            "pending_loads": self.model.pending_loads,
            "counters": self.counters.to_dict(),
            "scheduler": asdict(self.model.stats),
            "faults": self.faults.to_dict(),
            "config": {
                "num_parallel": cfg.num_parallel,
                "max_loaded_models": cfg.max_loaded_models,
                "vram_bytes": cfg.vram_bytes,
                "max_queue": cfg.max_queue,
                "keep_alive": None if math.isinf(cfg.keep_alive) else cfg.keep_alive,
                "speed": cfg.speed,
                "zero_delay": cfg.zero_delay,
                "seed": cfg.seed,
            },
        }


RUNTIME = web.AppKey("runtime", NodeRuntime)
