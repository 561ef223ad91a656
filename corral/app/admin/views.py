"""What the admin API shows of a backend and a breaker: typed, described, JSON-ready.

Times on the fleet's clock (the event loop's) are shown relative to now, in seconds
(``*_ago_s``, ``*_in_s``), since that clock means nothing outside the process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from corral.core.breakers import BreakerView
from corral.core.types import BackendState

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = [
    "BackendView",
    "BreakerInfo",
    "EngineSignalsView",
    "LoadedModel",
    "backend_view",
    "breaker_info",
    "fleet_now",
]


def fleet_now() -> float:
    """The fleet's clock (probes, breakers and keep-alives are timed on it)."""
    return asyncio.get_running_loop().time()


def _ago(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def _ahead(at: float | None, now: float) -> float | None:
    if at is None or at == float("inf"):
        return None
    return round(max(0.0, at - now), 3)


class BreakerInfo(BaseModel):
    backend: str = Field(description="The backend the breaker guards.")
    model: str | None = Field(description="The model, or null for the backend-wide breaker.")
    state: Literal["open", "half_open", "cooldown"] = Field(
        description="open: no traffic; half_open: a few probe requests go through; "
        "cooldown: held out by an explicit cooldown (a busy answer, an operator)."
    )
    reason: str = Field(description="Why it opened (the failures or the cooldown's cause).")
    since_ago_s: float | None = Field(description="Seconds since it entered this state.")
    until_in_s: float | None = Field(
        description="Seconds until it may take traffic again; null while half-open."
    )
    consecutive_failures: int = Field(description="Transient failures in a row.")
    window_failures: int = Field(description="Failures in the error-rate window.")
    window_requests: int = Field(description="Answers in the error-rate window.")
    probes_in_flight: int = Field(description="Half-open probe requests running now.")
    trips: int = Field(description="Times it opened in a row (each doubles the open period).")


def breaker_info(view: BreakerView, now: float) -> BreakerInfo:
    return BreakerInfo(
        backend=view.backend,
        model=view.model,
        state=view.state,
        reason=view.reason,
        since_ago_s=_ago(view.since, now) if view.since != float("-inf") else None,
        until_in_s=_ahead(view.until, now),
        consecutive_failures=view.consecutive_failures,
        window_failures=view.window_failures,
        window_requests=view.window_requests,
        probes_in_flight=view.probes_in_flight,
        trips=view.trips,
    )


class LoadedModel(BaseModel):
    model: str = Field(description="The model's name (normalized, name:tag).")
    expires_in_s: float | None = Field(
        description="Seconds until the engine unloads it (keep-alive); null = never."
    )


class EngineSignalsView(BaseModel):
    running: float = Field(description="Requests the engine runs now (vLLM metrics).")
    waiting: float = Field(description="Requests waiting inside the engine.")
    kv_cache_usage: float = Field(description="KV cache in use, 0-1.")
    prefix_cache_hit_rate: float | None = Field(
        description="Prefix cache hits / queries since the engine started; null before any."
    )
    preemptions: float = Field(description="Sequences preempted since the engine started.")
    read_ago_s: float = Field(description="Seconds since the metrics were read.")


class BackendView(BaseModel):
    name: str = Field(description="Unique name (X-Corral-Backend).")
    origin: str = Field(
        description="Where it came from: config (the settings), registered (the admin API, "
        "kept in the store), agent (a node agent) or worker (spawned by Corral)."
    )
    kind: str = Field(description="API dialect: ollama or openai.")
    url: str = Field(description="Base URL.")
    healthy: bool = Field(description="Its last probe succeeded.")
    enabled: bool = Field(description="False: kept and probed, but chosen for nothing.")
    draining: bool = Field(description="Finishes what it has, takes nothing new.")
    drained: bool = Field(description="Draining and nothing left in flight.")
    in_flight: int = Field(description="Requests running on it now.")
    in_flight_by_model: dict[str, int] = Field(description="Requests running, per model.")
    queued: int = Field(description="Requests waiting in the gateway's queue for a model it holds.")
    max_concurrency: int = Field(description="Most requests Corral sends it at once.")
    max_per_model: int | None = Field(description="Most at once per model; null = no own cap.")
    weight: float = Field(description="Relative share for weighted policies.")
    tags: list[str] = Field(description="Operator tags.")
    labels: dict[str, str] = Field(description="Operator labels.")
    models: list[str] = Field(description="Models it holds (from its last model list).")
    loaded: list[LoadedModel] = Field(description="Models resident in memory now.")
    breakers: list[BreakerInfo] = Field(
        description="Its breakers that are not simply closed (backend-wide and per model)."
    )
    last_error: str | None = Field(description="Why its last probe or connect failed.")
    last_check_ago_s: float | None = Field(description="Seconds since its last probe.")
    last_ok_ago_s: float | None = Field(description="Seconds since a probe last succeeded.")
    consecutive_failures: int = Field(description="Probes failed in a row.")
    version: str | None = Field(description="Engine version, when it says.")
    served: int = Field(description="Requests it answered since the gateway started.")
    failed: int = Field(description="Requests that failed on it since the gateway started.")
    vram_gb: float | None = Field(description="Memory for models (GiB), when known.")
    max_loaded_models: int | None = Field(description="Models it keeps loaded at once.")
    signals: EngineSignalsView | None = Field(
        description="The engine's own load signals (vLLM /metrics); null when it has none."
    )
    telemetry: dict[str, Any] | None = Field(
        description="What its node agent last reported (CPU, memory, GPUs, addresses); "
        "null without an agent."
    )


def _signals(state: BackendState, now: float) -> EngineSignalsView | None:
    s = state.signals
    if s is None:
        return None
    rate = s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else None
    return EngineSignalsView(
        running=s.running,
        waiting=s.waiting,
        kv_cache_usage=s.kv_cache_usage,
        prefix_cache_hit_rate=rate,
        preemptions=s.preemptions,
        read_ago_s=_ago(s.at, now) or 0.0,
    )


def backend_view(gw: Gateway, state: BackendState, now: float | None = None) -> BackendView:
    now = fleet_now() if now is None else now
    fleet = gw.fleet
    queue = fleet.scheduler.queue
    board = fleet.breakers
    breakers = (
        [breaker_info(v, now) for v in board.snapshot(now) if v.backend == state.name]
        if board is not None
        else []
    )
    # Names as the backend itself lists them (the fleet keys bare names as name:latest).
    own = fleet.upstream_name
    loaded = [
        LoadedModel(model=own(state.name, m), expires_in_s=_ahead(until, now))
        for m, until in sorted(state.loaded.items())
        if until > now
    ]
    return BackendView(
        name=state.name,
        origin=state.origin,
        kind=state.kind,
        url=state.url,
        healthy=state.healthy,
        enabled=state.enabled,
        draining=state.draining,
        drained=state.draining and state.in_flight == 0,
        in_flight=state.in_flight,
        in_flight_by_model=dict(state.in_flight_by_model),
        queued=sum(queue.waiting_for(m) for m in state.models),
        max_concurrency=state.max_concurrency,
        max_per_model=state.max_per_model,
        weight=state.weight,
        tags=list(state.tags),
        labels=dict(state.labels),
        models=sorted(own(state.name, m) for m in state.models),
        loaded=loaded,
        breakers=breakers,
        last_error=state.last_error,
        last_check_ago_s=_ago(state.last_check_at, now),
        last_ok_ago_s=_ago(state.last_ok_at, now),
        consecutive_failures=state.consecutive_failures,
        version=state.version,
        served=state.served,
        failed=state.failed,
        vram_gb=round(state.vram_bytes / 1024**3, 3) if state.vram_bytes else None,
        max_loaded_models=state.max_loaded_models,
        signals=_signals(state, now),
        telemetry=gw.telemetry.get(state.name),
    )
