"""What the admin API shows of the fleet's models: where each is, what is loaded, and
what recent demand says (the arithmetic is corral/core/demand.py's; this gathers the
fleet's facts for it and shapes the answers).

Demand is counted by a usage listener (`demand_listener`): one call per finished
request, a few dict operations, nothing on the request path itself.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from corral.app.admin.model_ops import display_name, rfc3339, wall_clock
from corral.app.admin.model_schema import (
    DemandView,
    IdleList,
    IdleView,
    ModelMapView,
    ModelView,
    Placement,
    RecommendationList,
    RecommendationView,
)
from corral.core.demand import DemandCounter, Holder, Resident, idle_models, recommend
from corral.core.types import BackendState
from corral.core.usage import UsageRecord

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["DEMAND_ENDPOINTS", "demand_listener", "idle_view", "model_map", "recommendations"]

# Requests that load a model and hold a slot: what demand for a model means.
DEMAND_ENDPOINTS = frozenset(
    {
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    }
)
_MIN_LOAD_S = 0.2  # shorter "loads" are Ollama's bookkeeping for a resident model


def _counts(status: int) -> bool:
    # Served, failed by the fleet (5xx), given up on while waiting (499), or asking for
    # a model nobody holds (404): demand. Refused for who asked or what they sent: not.
    return status < 400 or status >= 499 or status == 404


def demand_listener(counter: DemandCounter) -> Callable[[UsageRecord], None]:
    """A usage listener feeding ``counter`` from finished inference requests."""

    def observe(r: UsageRecord) -> None:
        if r.endpoint not in DEMAND_ENDPOINTS or not r.model or not _counts(r.status):
            return
        counter.add(
            r.model,
            r.backend,
            r.started_at + r.duration_s,
            busy_s=r.duration_s - r.queued_s if r.backend is not None else 0.0,
            waited_s=r.queued_s,
            cold=(r.load_duration_s or 0.0) >= _MIN_LOAD_S,
        )

    return observe


def _placement(gw: Gateway, b: BackendState, key: str, now: float) -> Placement:
    loaded = b.is_loaded(key, now)
    expiry = b.loaded[key] if loaded and not math.isinf(b.loaded[key]) else None
    return Placement(
        backend=b.name,
        kind=b.kind,
        upstream=gw.fleet.upstream_name(b.name, key),
        size=b.model_bytes.get(key, 0),
        loaded=loaded,
        always_loaded=b.kind != "ollama",
        expires_at=rfc3339(None if expiry is None else wall_clock()(expiry)),
        expires_in_s=None if expiry is None else round(expiry - now, 3),
        healthy=b.healthy,
        enabled=b.enabled,
        draining=b.draining,
        in_flight=b.in_flight_by_model.get(key, 0),
    )


def model_map(gw: Gateway, counter: DemandCounter, wall_now: float) -> ModelMapView:
    """Every model in the fleet (and every configured one, held or not), by name."""
    fleet = gw.fleet
    now = asyncio.get_running_loop().time()
    keys = set(fleet.scheduler.models()) | {m.key for m in fleet.models.models}
    views = []
    for key in keys:
        logical = fleet.models.model(key)
        holders = sorted(fleet.scheduler.holders(key), key=lambda b: b.name)
        placements = [_placement(gw, b, key, now) for b in holders]
        views.append(
            ModelView(
                model=display_name(fleet, key),
                configured=logical is not None,
                aliases=list(logical.aliases) if logical is not None else [],
                backends=placements,
                loaded_on=[p.backend for p in placements if p.loaded],
                demand=DemandView(
                    requests_1m=counter.demand(key, wall_now, 60).requests,
                    requests_5m=counter.demand(key, wall_now, 300).requests,
                    requests_15m=counter.demand(key, wall_now, 900).requests,
                    last_request_at=rfc3339(counter.last_seen(key)),
                ),
            )
        )
    views.sort(key=lambda v: v.model)
    return ModelMapView(models=views)


def idle_view(gw: Gateway, counter: DemandCounter, wall_now: float, window_s: float) -> IdleList:
    """Models resident on an Ollama backend and not asked of it for ``window_s``."""
    fleet = gw.fleet
    now = asyncio.get_running_loop().time()
    to_wall = wall_clock()
    states = {b.name: b for b in fleet.backends.values() if b.kind == "ollama"}
    resident = [
        Resident(key, b.name, b.in_flight_by_model.get(key, 0))
        for b in states.values()
        for key in b.loaded
        if b.is_loaded(key, now)
    ]
    found = idle_models(resident, counter, wall_now, window_s, since=gw.started_at)
    return IdleList(
        window_s=window_s,
        since=rfc3339(gw.started_at) or "",
        models=[
            IdleView(
                model=display_name(fleet, m.model),
                backend=m.backend,
                idle_s=round(m.idle_s, 3),
                last_request_at=rfc3339(m.last_request_at),
                expires_at=rfc3339(to_wall(states[m.backend].loaded[m.model])),
                size=states[m.backend].model_bytes.get(m.model, 0),
            )
            for m in found
        ],
    )


def recommendations(
    gw: Gateway, counter: DemandCounter, wall_now: float, window_s: float, min_requests: int
) -> RecommendationList:
    """Warm-up (or pull) recommendations from the demand of the last ``window_s``."""
    fleet = gw.fleet
    now = asyncio.get_running_loop().time()
    demand = {key: counter.demand(key, wall_now, window_s) for key in counter.models()}
    holders = {
        key: [
            Holder(
                backend=b.name,
                loaded=b.is_loaded(key, now),
                slots=min(b.max_concurrency, b.max_per_model or b.max_concurrency),
                available=b.candidate,
                can_load=b.kind == "ollama",
                busy=b.in_flight / max(1, b.max_concurrency),
            )
            for b in fleet.scheduler.holders(key)
        ]
        for key in demand
    }
    found = recommend(demand, holders, min_requests=min_requests)
    return RecommendationList(
        window_s=window_s,
        min_requests=min_requests,
        recommendations=[
            RecommendationView(
                model=display_name(fleet, r.model),
                action=r.action,
                backends=list(r.backends),
                loaded_on=list(r.loaded_on),
                needed=r.needed,
                requests=r.demand.requests,
                per_minute=round(r.demand.per_minute, 3),
                concurrency=round(r.demand.concurrency, 3),
                mean_wait_s=round(r.demand.mean_wait_s, 3),
                reason=r.reason,
            )
            for r in found
        ],
    )
