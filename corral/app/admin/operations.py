"""Running the gateway: the queue and admission, breakers, health checks, logs, stats.

Everything here acts on the running gateway only (nothing is stored but the audit
event): pausing admission, clearing breakers, a probe round.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from corral.app.admin.audit import audit_action
from corral.app.admin.deps import Actor, requires
from corral.app.admin.openapi import refusals
from corral.app.admin.registry import backend_state
from corral.app.admin.stats import StatsView, stats_view
from corral.app.admin.views import BreakerInfo, breaker_info, fleet_now
from corral.app.logbuffer import LEVELS
from corral.core.names import normalize_model

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["QueueView", "router"]


class TenantQueue(BaseModel):
    tenant: str = Field(description="Who the requests are for (key's user, group or header).")
    weight: float = Field(description="The tenant's fair share weight.")
    waiting: int = Field(description="Its requests waiting for a slot.")
    by_model: dict[str, int] = Field(description="Waiting requests per model.")
    oldest_wait_s: float = Field(description="How long its oldest waiting request has waited.")
    service: float = Field(
        description="Tokens served so far divided by weight (the fair queue's counter); "
        "the lowest goes next."
    )


class QueueView(BaseModel):
    paused: bool = Field(description="Admission paused: requests queue but none is dispatched.")
    waiting: int = Field(description="Requests waiting for a backend slot.")
    max_waiting: int = Field(description="Most that may wait (queue.max_waiting).")
    in_flight: int = Field(description="Requests holding a backend slot now.")
    by_model: dict[str, int] = Field(description="Waiting requests per model.")
    oldest_wait_s: float | None = Field(description="Longest wait of any waiting request.")
    tenants: list[TenantQueue] = Field(description="Per tenant, the ones with requests waiting.")


class BreakerList(BaseModel):
    enabled: bool = Field(description="Breakers are on (breakers.enabled).")
    breakers: list[BreakerInfo] = Field(description="Breakers open, half-open or cooling down.")


class Cleared(BaseModel):
    cleared: int = Field(description="Breakers and cooldowns cleared.")


class ProbeResult(BaseModel):
    backend: str = Field(description="The backend probed.")
    healthy: bool = Field(description="The probe succeeded.")
    was_healthy: bool = Field(description="Its health before this probe.")
    took_ms: float = Field(description="How long the probe took.")
    models: int = Field(description="Models it holds after the probe.")
    error: str | None = Field(description="Why it failed, when it did.")


class HealthCheck(BaseModel):
    healthy: int = Field(description="Backends that passed.")
    unhealthy: int = Field(description="Backends that failed.")
    results: list[ProbeResult] = Field(description="One per backend, by name.")


class LogRecordView(BaseModel):
    time: float = Field(description="When it was logged, seconds since the epoch.")
    level: str = Field(description="debug, info, warning, error or critical.")
    logger: str = Field(description="The logger's name, e.g. corral.fleet.")
    message: str = Field(description="The formatted message.")


class LogList(BaseModel):
    capacity: int = Field(description="Records the buffer keeps (log_buffer).")
    records: list[LogRecordView] = Field(description="Oldest first.")


def queue_view(gw: Gateway) -> QueueView:
    sched = gw.fleet.scheduler
    tenants = [
        TenantQueue(
            tenant=t.tenant,
            weight=t.weight,
            waiting=t.waiting,
            by_model={m: n for m, n in t.by_model.items() if n},
            oldest_wait_s=round(t.oldest_wait_s, 3),
            service=round(t.counter, 3),
        )
        for t in sched.queue_view(fleet_now())
    ]
    by_model: dict[str, int] = {}
    for t in tenants:
        for model, n in t.by_model.items():
            by_model[model] = by_model.get(model, 0) + n
    return QueueView(
        paused=sched.paused,
        waiting=sched.waiting,
        max_waiting=sched.max_waiting,
        in_flight=sched.in_flight,
        by_model=dict(sorted(by_model.items())),
        oldest_wait_s=max((t.oldest_wait_s for t in tenants), default=None),
        tenants=tenants,
    )


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(prefix="/admin", tags=["operations"])
    admin = Depends(requires(gw, "admin"))

    @api.get("/queue", response_model=QueueView, summary="The queue")
    async def get_queue(_: Actor = admin) -> QueueView:
        """Depth per tenant and per model, the oldest wait, whether admission is paused."""
        return queue_view(gw)

    @api.post("/queue/pause", response_model=QueueView, summary="Pause admission")
    async def pause(actor: Actor = admin) -> QueueView:
        """Dispatch nothing new: requests queue (up to queue.max_waiting, each until its
        deadline) while running ones finish. Until resumed or restarted."""
        before = gw.fleet.scheduler.paused
        gw.fleet.pause()
        await audit_action(
            gw, actor, "queue.pause", before={"paused": before}, after={"paused": True}
        )
        return queue_view(gw)

    @api.post("/queue/resume", response_model=QueueView, summary="Resume admission")
    async def resume(actor: Actor = admin) -> QueueView:
        """Dispatch again; waiting requests take free slots at once, in fair order."""
        before = gw.fleet.scheduler.paused
        gw.fleet.resume()
        await audit_action(
            gw, actor, "queue.resume", before={"paused": before}, after={"paused": False}
        )
        return queue_view(gw)

    @api.get("/breakers", response_model=BreakerList, summary="Open breakers and cooldowns")
    async def breakers(_: Actor = admin) -> BreakerList:
        """Every breaker not simply closed: open, half-open, or under a cooldown."""
        board = gw.fleet.breakers
        if board is None:
            return BreakerList(enabled=False, breakers=[])
        now = fleet_now()
        return BreakerList(
            enabled=True, breakers=[breaker_info(v, now) for v in board.snapshot(now)]
        )

    @api.delete(
        "/breakers",
        response_model=Cleared,
        summary="Clear breakers and cooldowns",
        responses=refusals({404: "No backend by that name (`backend`)."}),
    )
    async def clear_breakers(
        backend: Annotated[str | None, Query(description="Only this backend's.")] = None,
        model: Annotated[
            str | None, Query(description="Only this model's (on every backend, or `backend`).")
        ] = None,
        actor: Actor = admin,
    ) -> Cleared:
        """Close them now and end cooldowns; requests they held back may go at once. With
        no filter, every one; `backend` alone clears its backend-wide breaker and every
        model's there."""
        if backend is not None:
            backend_state(gw, backend)  # 404 for an unknown backend
        key = normalize_model(model) if model else None
        cleared = gw.fleet.clear_breakers(backend, key)
        target = f"{backend or '*'}:{key or '*'}"
        await audit_action(gw, actor, "breakers.clear", target, after={"cleared": cleared})
        return Cleared(cleared=cleared)

    @api.post("/health/check", response_model=HealthCheck, summary="Probe every backend now")
    async def health_check(actor: Actor = admin) -> HealthCheck:
        """Probe each backend at once (models, loaded models and signals re-read) and
        answer what each said; a backend that fails is marked down as a probe would."""
        loop = asyncio.get_running_loop()

        async def one(name: str) -> ProbeResult | None:
            state = gw.fleet.backends.get(name)
            if state is None:
                return None
            was, started = state.healthy, loop.time()
            await gw.fleet.probe(name, models=True)
            return ProbeResult(
                backend=name,
                healthy=state.healthy,
                was_healthy=was,
                took_ms=round((loop.time() - started) * 1000, 2),
                models=len(state.models),
                error=None if state.healthy else state.last_error,
            )

        found = await asyncio.gather(*(one(n) for n in sorted(gw.fleet.backends)))
        results = [r for r in found if r is not None]
        healthy = sum(r.healthy for r in results)
        body = HealthCheck(healthy=healthy, unhealthy=len(results) - healthy, results=results)
        await audit_action(
            gw, actor, "health.check", after={"healthy": healthy, "unhealthy": body.unhealthy}
        )
        return body

    @api.get("/logs", response_model=LogList, summary="Recent log records")
    async def logs(
        limit: Annotated[int, Query(ge=1, le=10_000, description="Most records returned.")] = 100,
        level: Annotated[
            Literal["debug", "info", "warning", "error", "critical"],
            Query(description="Least severe level returned."),
        ] = "debug",
        logger: Annotated[
            str | None, Query(description="Only this logger and its children, e.g. corral.fleet.")
        ] = None,
        _: Actor = admin,
    ) -> LogList:
        """The newest records the gateway logged (those at or above log_level), from an
        in-memory buffer of log_buffer records; oldest first."""
        entries = gw.logs.recent(limit=limit, min_level=LEVELS[level], logger=logger)
        return LogList(
            capacity=gw.logs.capacity,
            records=[
                LogRecordView(time=e.time, level=e.level, logger=e.logger, message=e.message)
                for e in entries
            ],
        )

    @api.get("/stats", response_model=StatsView, summary="Request counts and latencies")
    async def stats(_: Actor = admin) -> StatsView:
        """Requests since start, in flight, the queue, and per backend: served, failed,
        and latencies over the most recent requests."""
        return stats_view(gw, time.time())

    return api
