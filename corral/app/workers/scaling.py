"""The autoscaler's eyes and hands on the live gateway.

Every look reads what the pure `Autoscaler` (corral/core/autoscale.py) needs — each
worker's load and idleness from the fleet, the queue in front of the workers'
models — and carries out its decision through the pool. Its actions are logged,
kept for the admin API, and audited as the actor ``autoscaler``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.adapters.store.audit import add_audit
from corral.adapters.workers import WorkerStartError
from corral.config.workers import WorkersConfig
from corral.core.autoscale import Autoscaler, Pressure, ScaleRule, WorkerLoad
from corral.core.names import normalize_model

if TYPE_CHECKING:
    from corral.app.workers.pool import Worker, WorkerPool

__all__ = ["ScaleEvent", "Scaling"]

log = logging.getLogger("corral.workers")


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    at: float  # wall clock
    added: tuple[str, ...]
    removed: tuple[str, ...]
    reason: str
    kind: str  # min, up or down


def scale_rule(config: WorkersConfig) -> ScaleRule:
    return ScaleRule(
        min=config.min,
        max=config.max,
        up_queue=config.scale_up_queue,
        up_wait_s=config.scale_up_wait_s,
        idle_s=config.idle_s,
        cooldown_s=config.cooldown_s,
        autoscale=config.autoscale,
        # A failed start is retried after one look, then after twice as long, ...
        retry_base_s=config.interval_s,
    )


class Scaling:
    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.autoscaler = Autoscaler(scale_rule(pool.config))
        self.events: deque[ScaleEvent] = deque(maxlen=50)  # newest first
        self._models = {normalize_model(m) for m in pool.config.models}

    async def check(self) -> None:
        """One look: note idleness, read the queue, scale as the autoscaler decides."""
        pool = self.pool
        now = asyncio.get_running_loop().time()
        self.note_idle(now)
        decision = self.autoscaler.decide(self.loads(), self.pressure(now), now)
        if not decision:
            return
        added: list[Worker] = []
        if decision.add:
            try:
                added = pool.reserve(decision.add, "min" if decision.kind == "min" else "autoscale")
            except WorkerStartError as exc:
                log.warning("workers: cannot add %d: %s", decision.add, exc)
                self.autoscaler.failed(now)
        removed = [pool.workers[i] for i in decision.remove if i in pool.workers]
        for w in removed:
            pool.retiring(w)
        if added or removed:
            await self._record(added, removed, decision.reason, decision.kind or "")

    async def start_for(self, model: str) -> Worker | None:
        """Scale from zero: a request wants ``model``, one of ``workers.models``, and no
        backend holds it. Start a worker (or join one already starting) and wait until
        it is ready or has failed; None when none may start (not a worker model,
        autoscaling off, ``workers.max`` reached, or held back after failed starts)."""
        pool = self.pool
        if pool.closing or not pool.config.autoscale or normalize_model(model) not in self._models:
            return None
        w = next((w for w in pool.workers.values() if w.state == "starting"), None)
        if w is None:
            now = asyncio.get_running_loop().time()
            if len(pool.live()) >= pool.config.max or now < self.autoscaler.retry_at:
                return None
            try:
                (w,) = pool.reserve(1, "demand")
            except WorkerStartError as exc:
                log.warning("workers: cannot start one for %s: %s", model, exc)
                self.autoscaler.failed(now)
                return None
            await self._record([w], [], f"a request for {model}, which no backend holds", "up")
        if w.bring_up is not None:
            # asyncio.wait: the request leaving must not cancel the start.
            await asyncio.wait([w.bring_up])
        return w

    async def _record(
        self, added: list[Worker], removed: list[Worker], reason: str, kind: str
    ) -> None:
        event = ScaleEvent(
            time.time(), tuple(w.id for w in added), tuple(w.id for w in removed), reason, kind
        )
        self.events.appendleft(event)
        log.info("workers: +%d -%d (%s)", len(event.added), len(event.removed), event.reason)
        await self._audit(event)

    async def _audit(self, event: ScaleEvent) -> None:
        store = self.pool.gw.store
        if store is None:
            return
        action = "workers.scale_up" if event.added else "workers.scale_down"
        target = ",".join(event.added or event.removed)[:256]
        after = {"added": list(event.added), "removed": list(event.removed)}
        try:
            await add_audit(
                store, "autoscaler", action, target, after=after | {"reason": event.reason}
            )
        except Exception:  # an audit failure must not stop the autoscaler
            log.exception("workers: could not audit %s", action)

    def note_idle(self, now: float) -> None:
        """Record when each ready worker last had work (a request finished counts)."""
        backends = self.pool.gw.fleet.backends
        for w in self.pool.workers.values():
            state = backends.get(w.id)
            if w.state != "ready" or state is None:
                continue
            done = state.served + state.failed
            if state.in_flight:
                w.idle_since = None
            elif w.idle_since is None or done != w.done_seen:
                w.idle_since = now  # a request finished since the last look
            w.done_seen = done

    def loads(self) -> list[WorkerLoad]:
        backends = self.pool.gw.fleet.backends
        loads = []
        for w in self.pool.live():
            state = backends.get(w.id)
            loads.append(
                WorkerLoad(
                    id=w.id,
                    ready=w.state == "ready",
                    in_flight=state.in_flight if state is not None else 0,
                    idle_since=w.idle_since,
                    started_at=w.started_at,
                )
            )
        return loads

    def pressure(self, now: float) -> Pressure:
        """Requests waiting for a model the workers hold or must hold (any model while
        neither is known)."""
        fleet = self.pool.gw.fleet
        models = set(self._models)
        for w in self.pool.workers.values():
            state = fleet.backends.get(w.id)
            if state is not None:
                models.update(state.models)
        waiting = 0
        oldest = math.inf
        for ticket in fleet.scheduler.queue.tickets():
            if not models or ticket.info.model in models:
                waiting += 1
                oldest = min(oldest, ticket.enqueued_at)
        return Pressure(waiting, now - oldest if waiting else 0.0)
