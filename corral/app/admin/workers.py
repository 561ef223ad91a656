"""Spawned workers over HTTP: list, spawn, prune, stop one; seed 001's routes as aliases.

Admin scope; every change is audited. The work is done by the gateway's
`WorkerPool` (corral/app/workers.py); this module only validates and shapes it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from corral.app.admin.audit import audit_action
from corral.app.admin.deps import Actor, requires
from corral.app.admin.openapi import refusals
from corral.core.errors import Conflict, NotFound

if TYPE_CHECKING:
    from corral.app.gateway import Gateway
    from corral.app.workers import ScaleEvent, Worker, WorkerPool

__all__ = ["router"]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class WorkerView(BaseModel):
    id: str = Field(description="The worker's id; also its backend name in the fleet.")
    state: str = Field(
        description="starting (engine and model pulls), ready (serving), draining (finishing "
        "its requests before it stops), stopping, stopped, failed."
    )
    reason: str = Field(description="Why it was started: admin, autoscale or min.")
    kind: str = Field(description="API dialect of its engine: ollama or openai.")
    url: str = Field(description="Where the gateway reaches its engine.")
    port: int = Field(description="Its port.")
    gpu: str | None = Field(description="The GPU id it was given, if GPUs are configured.")
    pid: int | None = Field(description="Its process id.")
    created_at: str = Field(description="When it was started (UTC, ISO 8601).")
    ready_at: str | None = Field(description="When it joined the fleet.")
    ended_at: str | None = Field(description="When it stopped or failed.")
    in_flight: int = Field(description="Requests it is serving now.")
    served: int = Field(description="Requests it has answered.")
    idle_s: float | None = Field(description="Seconds since it last had work; null while busy.")
    models: list[str] = Field(description="Models it holds.")
    exit_code: int | None = Field(description="Its exit code once it ended.")
    error: str | None = Field(description="Why it failed, for a failed worker.")


class WorkerDetail(WorkerView):
    log: list[str] = Field(description="The last lines it printed (stdout and stderr).")


class ScaleEventView(BaseModel):
    at: str = Field(description="When (UTC, ISO 8601).")
    added: list[str] = Field(description="Workers started.")
    removed: list[str] = Field(description="Workers pruned.")
    reason: str = Field(description="What the autoscaler saw.")


class WorkersView(BaseModel):
    enabled: bool = Field(description="Whether workers are configured (workers.command).")
    provider: str = Field(description="How workers are started (process).")
    kind: str = Field(description="API dialect of the workers' engine.")
    min: int = Field(description="Workers kept running (workers.min).")
    max: int = Field(description="Most workers at once (workers.max).")
    autoscale: bool = Field(description="Whether queueing adds and idleness prunes workers.")
    cooling_until: str | None = Field(
        description="Until when the autoscaler holds off the next scaling action."
    )
    workers: list[WorkerView] = Field(description="Workers starting, serving or stopping.")
    recent: list[WorkerView] = Field(description="The last workers that ended, newest first.")
    events: list[ScaleEventView] = Field(description="The autoscaler's last actions, newest first.")


class SpawnRequest(BaseModel):
    # A mistyped field, or a value of another JSON type ("2" for 2), is a 400.
    model_config = ConfigDict(extra="forbid", strict=True)

    count: int = Field(default=1, ge=1, le=1000, description="How many workers to start.")
    wait: bool = Field(
        default=True,
        description="Answer once all are ready (if one fails, none are kept); false: "
        "answer at once with them starting.",
    )


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    mode: Literal["idle", "all"] = Field(
        default="idle",
        description="idle: only workers with nothing in flight; all: every worker, idle "
        "first, busy ones drained before they stop.",
    )
    count: int | None = Field(default=None, ge=1, description="At most this many; unset = all.")
    wait: bool = Field(default=True, description="Answer once they have stopped.")


class WorkersChanged(BaseModel):
    workers: list[WorkerView] = Field(description="The workers started or pruned.")


def _view(pool: WorkerPool, w: Worker, now: float, log_lines: int | None = None) -> WorkerView:
    state = pool.gw.fleet.backends.get(w.id) if w.ended_at is None else None
    in_flight = state.in_flight if state is not None else 0
    fields = {
        "id": w.id,
        "state": w.state,
        "reason": w.reason,
        "kind": pool.config.kind,
        "url": w.url,
        "port": w.launch.port,
        "gpu": w.launch.gpu,
        "pid": w.handle.pid if w.handle is not None else None,
        "created_at": _iso(w.created_at),
        "ready_at": _iso(w.ready_at),
        "ended_at": _iso(w.ended_at),
        "in_flight": in_flight,
        "served": state.served if state is not None else w.served,
        "idle_s": None
        if w.idle_since is None or in_flight or w.ended_at is not None
        else round(now - w.idle_since, 3),
        "models": sorted(state.models) if state is not None else w.models,
        "exit_code": w.exit_code,
        "error": w.error,
    }
    if log_lines is None:
        return WorkerView.model_validate(fields)
    return WorkerDetail.model_validate(fields | {"log": pool.log_tail(w, log_lines)})


def _event(e: ScaleEvent) -> ScaleEventView:
    return ScaleEventView(
        at=_iso(e.at) or "", added=list(e.added), removed=list(e.removed), reason=e.reason
    )


_NOT_CONFIGURED = "Workers are not configured (workers.command)."
_SPAWN_ERRORS = refusals(
    {
        409: "Workers are not configured, or as many would pass workers.max.",
        502: "A worker failed to start or to get ready (with `wait`); none is kept.",
    }
)


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(tags=["workers"])
    admin = Depends(requires(gw, "admin"))

    def pool() -> WorkerPool:
        if gw.workers is None:
            raise Conflict(
                "workers are not configured: set workers.command (see docs/workers.md)",
                param="workers.command",
            )
        return gw.workers

    def now() -> float:
        return asyncio.get_running_loop().time()

    async def listing() -> WorkersView:
        cfg = gw.settings.workers
        p = gw.workers
        if p is None:
            return WorkersView(
                enabled=False,
                provider=cfg.provider,
                kind=cfg.kind,
                min=cfg.min,
                max=cfg.max,
                autoscale=cfg.autoscale,
                cooling_until=None,
                workers=[],
                recent=[],
                events=[],
            )
        t = now()
        until = p.autoscaler.cooling_until()
        wall = None if until is None or until <= t else _iso(until - t + time.time())
        return WorkersView(
            enabled=True,
            provider=p.provider.name,
            kind=cfg.kind,
            min=cfg.min,
            max=cfg.max,
            autoscale=cfg.autoscale,
            cooling_until=wall,
            workers=[_view(p, w, t) for w in p.workers.values()],
            recent=[_view(p, w, t) for w in p.ended],
            events=[_event(e) for e in p.events],
        )

    async def spawning(actor: Actor, body: SpawnRequest) -> WorkersChanged:
        p = pool()
        started = await p.spawn(body.count, reason="admin", wait=body.wait)
        t = now()
        views = [_view(p, w, t) for w in started]
        await audit_action(
            gw,
            actor,
            "workers.spawn",
            ",".join(w.id for w in started)[:256],
            after=[v.model_dump() for v in views],
        )
        return WorkersChanged(workers=views)

    async def pruning(actor: Actor, body: PruneRequest) -> WorkersChanged:
        p = pool()
        t = now()
        chosen = await p.prune(body.mode, body.count, wait=body.wait)
        views = [_view(p, w, t) for w in chosen]
        if chosen:
            await audit_action(
                gw,
                actor,
                "workers.prune",
                ",".join(w.id for w in chosen)[:256],
                before={"mode": body.mode, "count": body.count},
                after=[v.model_dump() for v in views],
            )
        return WorkersChanged(workers=views)

    @api.get("/admin/workers", response_model=WorkersView, summary="List workers")
    async def list_workers(actor: Actor = admin) -> WorkersView:
        """Every spawned worker with its state and load, the last ones that ended (with
        why), and the autoscaler's recent actions."""
        return await listing()

    @api.get(
        "/admin/workers/{worker_id}",
        response_model=WorkerDetail,
        summary="One worker",
        responses=refusals({409: _NOT_CONFIGURED}),
    )
    async def get_worker(
        worker_id: str = Path(description="The worker's id, e.g. worker-3."),
        lines: int = Query(50, ge=0, le=400, description="Lines of its output to include."),
        actor: Actor = admin,
    ) -> WorkerView:
        """One worker (running or recently ended) with the tail of its output."""
        p = pool()
        w = p.find(worker_id)
        if w is None:
            raise NotFound(f"no worker named {worker_id!r}", param="id")
        return _view(p, w, now(), log_lines=lines)

    @api.post(
        "/admin/workers/spawn",
        response_model=WorkersChanged,
        status_code=201,
        summary="Spawn workers",
        responses=_SPAWN_ERRORS,
    )
    async def spawn_workers(
        body: Annotated[SpawnRequest | None, Body()] = None, actor: Actor = admin
    ) -> WorkersChanged:
        """Start `count` workers. Each joins the fleet once its engine answers and holds
        the required models. Past workers.max: 409, nothing started. With `wait` (the
        default), a worker that fails makes the whole call fail (502) and none is kept."""
        return await spawning(actor, body or SpawnRequest())

    @api.post(
        "/admin/workers/prune",
        response_model=WorkersChanged,
        summary="Prune workers",
        responses=refusals({409: _NOT_CONFIGURED}),
    )
    async def prune_workers(
        body: Annotated[PruneRequest | None, Body()] = None, actor: Actor = admin
    ) -> WorkersChanged:
        """Stop idle workers (mode idle, the default), or all of them, idle first (mode
        all); busy ones are drained first. The autoscaler refills up to workers.min."""
        return await pruning(actor, body or PruneRequest())

    @api.delete(
        "/admin/workers/{worker_id}",
        response_model=WorkerView,
        summary="Stop a worker",
        responses=refusals({409: _NOT_CONFIGURED}),
    )
    async def delete_worker(
        worker_id: str = Path(description="The worker's id, e.g. worker-3."),
        wait: bool = Query(True, description="Answer once it has stopped."),
        actor: Actor = admin,
    ) -> WorkerView:
        """Drain one worker (it finishes its requests, takes nothing new), take it out of
        the fleet and stop it. 404 for an id that is not a running worker."""
        p = pool()
        w = await p.remove(worker_id, wait=wait)
        view = _view(p, w, now())
        await audit_action(gw, actor, "workers.remove", w.id, after=view.model_dump())
        return view

    # Seed 001 ("Chimera"): its instance routes, onto the ones above.
    @api.get("/admin/instances", response_model=WorkersView, summary="List workers (seed alias)")
    async def list_instances(actor: Actor = admin) -> WorkersView:
        """Alias of GET /admin/workers, for seed 001's clients."""
        return await listing()

    @api.post(
        "/admin/instances/spawn",
        response_model=WorkersChanged,
        status_code=201,
        summary="Spawn a worker (seed alias)",
        responses=_SPAWN_ERRORS,
    )
    async def spawn_instance(
        body: Annotated[SpawnRequest | None, Body()] = None, actor: Actor = admin
    ) -> WorkersChanged:
        """Alias of POST /admin/workers/spawn; with no body it starts one worker, as the
        seed's does."""
        return await spawning(actor, body or SpawnRequest())

    @api.post(
        "/admin/instances/prune",
        response_model=WorkersChanged,
        summary="Prune workers (seed alias)",
        responses=refusals({409: _NOT_CONFIGURED}),
    )
    async def prune_instances(
        body: Annotated[PruneRequest | None, Body()] = None, actor: Actor = admin
    ) -> WorkersChanged:
        """Alias of POST /admin/workers/prune; with no body it prunes every worker (mode
        all), as the seed's does."""
        return await pruning(actor, body or PruneRequest(mode="all"))

    return api
