"""Model management across the fleet: ``/admin/models...`` (admin scope).

The fleet's model map (who holds what, loaded where and until when, recent demand);
pull (streamed progress per backend), delete and copy on many backends at once; warm
up and unload; idle models and warm-up recommendations from recent demand. The work
is done in model_ops.py, model_pull.py and model_views.py; these routes validate,
act and audit.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query

from corral.app.admin.audit import audit_action
from corral.app.admin.deps import Actor, requires
from corral.app.admin.model_ops import (
    copy_model,
    delete_model,
    held_model,
    named_backends,
    unload_model,
    warm_model,
)
from corral.app.admin.model_pull import Emit, ProgressStream, plan_pull, run_pull
from corral.app.admin.model_schema import (
    ActionResult,
    CopyRequest,
    IdleList,
    ModelMapView,
    ModelRequest,
    PullRequest,
    RecommendationList,
    WarmRequest,
)
from corral.app.admin.model_views import (
    demand_listener,
    idle_view,
    model_map,
    recommendations,
)
from corral.core.demand import DemandCounter
from corral.core.errors import InvalidField

if TYPE_CHECKING:
    from starlette.responses import Response

    from corral.app.gateway import Gateway

__all__ = ["router"]

_HORIZON_S = 3600.0  # how far back demand is kept, and the longest window asked about


def _where(gw: Gateway, key: str) -> dict[str, list[str]]:
    """Where a model is, for the audit log's "before"."""
    holders = gw.fleet.scheduler.holders(key)
    now = asyncio.get_running_loop().time()
    loaded = [b.name for b in holders if b.is_loaded(key, now)]
    return {"held_by": sorted(b.name for b in holders), "loaded_on": sorted(loaded)}


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(prefix="/admin/models", tags=["models"])
    admin = Depends(requires(gw, "admin"))
    demand = DemandCounter(bucket_s=10.0, horizon_s=_HORIZON_S)
    gw.usage_listeners.append(demand_listener(demand))

    async def audited(
        actor: Actor, action: str, target: str, before: Any, result: ActionResult
    ) -> ActionResult:
        after = result.model_dump(exclude_none=True)
        await audit_action(gw, actor, action, target, before=before, after=after)
        return result

    @api.get("", response_model=ModelMapView, summary="The fleet's model map")
    async def list_models(actor: Actor = admin) -> ModelMapView:
        """Every model in the fleet, by the name clients use: the backends holding it
        (kind, their own name for it, size), where it is loaded and until when, and
        how often it was asked for in the last 1, 5 and 15 minutes. Configured logical
        models are listed even when no backend holds them."""
        return model_map(gw, demand, time.time())

    @api.post(
        "/pull",
        response_model=ActionResult,
        response_model_exclude_none=True,
        summary="Pull a model onto many backends",
        responses={200: {"content": {"application/x-ndjson": {}}}},
    )
    async def pull(body: PullRequest, actor: Actor = admin) -> Response | ActionResult:
        """Pull the model on the named backends, or on every healthy Ollama backend.
        Streams NDJSON progress, one progress bar per backend (line shapes in
        docs/admin-api.md), ending with a summary line; with `stream: false`, answers
        only the summary. OpenAI-kind backends cannot pull: they are reported as
        skipped. Each backend's model list is re-read as its pull ends."""
        named = named_backends(gw.fleet, body.backends)
        tally, pulls = plan_pull(gw, body.model, named, insecure=body.insecure)
        before = _where(gw, gw.fleet.models.resolve(body.model))

        async def produce(emit: Emit) -> dict[str, Any]:
            summary = None
            try:
                summary = await run_pull(gw, tally, pulls, emit)
                await emit(summary)
                return summary
            finally:
                # Audited also when the caller left and the pulls were cancelled.
                after = summary or tally.summary()
                await audit_action(
                    gw, actor, "models.pull", tally.model, before=before, after=after
                )

        if body.stream:
            return ProgressStream(produce)
        summary = await produce(_ignore)
        return ActionResult.model_validate({k: v for k, v in summary.items() if k != "type"})

    @api.post(
        "/delete",
        response_model=ActionResult,
        response_model_exclude_none=True,
        summary="Delete a model from many backends",
    )
    async def delete(body: ModelRequest, actor: Actor = admin) -> ActionResult:
        """Delete the model from the named backends, or from every healthy Ollama
        backend holding it. 404 when no backend holds it."""
        key = await held_model(gw, body.model)
        before = _where(gw, key)
        named = named_backends(gw.fleet, body.backends)
        result = await delete_model(gw, key, body.model, named)
        return await audited(actor, "models.delete", result.model, before, result)

    @api.post(
        "/copy",
        response_model=ActionResult,
        response_model_exclude_none=True,
        summary="Copy a model on many backends",
    )
    async def copy(body: CopyRequest, actor: Actor = admin) -> ActionResult:
        """Copy the model to a new name on the named backends, or on every healthy
        Ollama backend holding it. 404 when no backend holds the source."""
        key = await held_model(gw, body.source, "source")
        before = _where(gw, key)
        named = named_backends(gw.fleet, body.backends)
        result = await copy_model(gw, key, body.source, body.destination, named)
        target = f"{result.model} -> {body.destination}"
        return await audited(actor, "models.copy", target, before, result)

    @api.post(
        "/warm",
        response_model=ActionResult,
        response_model_exclude_none=True,
        summary="Load a model ahead of demand",
    )
    async def warm(body: WarmRequest, actor: Actor = admin) -> ActionResult:
        """Load the model into memory with a keep_alive: on the named backends, or on
        `copies` (default 1) of the backends holding it, chosen as the scheduler
        would route a request. OpenAI-kind backends keep their model loaded while
        they run, and say so. Answers once the loads are done, with each backend's
        residency re-read from its /api/ps."""
        if body.backends is not None and body.copies is not None:
            raise InvalidField("give backends or copies, not both", param="copies")
        key = await held_model(gw, body.model)
        before = _where(gw, key)
        named = named_backends(gw.fleet, body.backends)
        result = await warm_model(gw, key, body.model, named, body.copies, body.keep_alive)
        return await audited(actor, "models.warm", result.model, before, result)

    @api.post(
        "/unload",
        response_model=ActionResult,
        response_model_exclude_none=True,
        summary="Unload a model from memory",
    )
    async def unload(body: ModelRequest, actor: Actor = admin) -> ActionResult:
        """Unload the model (keep_alive 0) from the named backends, or from every
        Ollama backend where it is loaded; it stays on disk. OpenAI-kind backends
        cannot unload their model and say so."""
        key = await held_model(gw, body.model)
        before = _where(gw, key)
        named = named_backends(gw.fleet, body.backends)
        result = await unload_model(gw, key, body.model, named)
        return await audited(actor, "models.unload", result.model, before, result)

    @api.get("/idle", response_model=IdleList, summary="Loaded models nobody is asking for")
    async def idle(
        window_s: float = Query(
            600.0, gt=0, le=_HORIZON_S, description="Idle means not asked for in this long."
        ),
        actor: Actor = admin,
    ) -> IdleList:
        """Models loaded on an Ollama backend that no request asked of that backend
        for `window_s` seconds (and none is running there): candidates to unload."""
        return idle_view(gw, demand, time.time(), window_s)

    @api.get(
        "/recommendations",
        response_model=RecommendationList,
        summary="Models to warm up, from recent demand",
    )
    async def recommend(
        window_s: float = Query(
            300.0, gt=0, le=_HORIZON_S, description="Look at the requests of this long."
        ),
        min_requests: int = Query(
            3, ge=1, description="Models asked for fewer times are left out."
        ),
        actor: Actor = admin,
    ) -> RecommendationList:
        """Models asked for often but loaded nowhere, or on fewer backends than their
        demand needs (requests in service at once, queue waits), with the backends to
        warm and the reason; a model no backend holds is recommended for pulling."""
        return recommendations(gw, demand, time.time(), window_s, min_requests)

    return api


async def _ignore(line: dict[str, Any]) -> None:
    return None
