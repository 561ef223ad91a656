"""Plain domain types shared by the scheduler, the policies and the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BackendKind",
    "BackendState",
    "EngineSignals",
    "Outcome",
    "RequestInfo",
    "RouteDecision",
]

BackendKind = Literal["ollama", "openai"]


@dataclass(slots=True, frozen=True)
class EngineSignals:
    """What an engine's own metrics say about its load (vLLM's /metrics), summed over
    the models it serves. Counters are totals since the engine started."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0  # 0-1
    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0
    preemptions: float = 0.0
    at: float = 0.0  # when they were read (the gateway's clock)


@dataclass(slots=True, eq=False)
class BackendState:
    """What the gateway knows about one backend right now.

    Mutated only by the gateway's event loop (probes, dispatch, completion), read by
    policies. ``models`` holds normalized names (``name:tag``).
    """

    name: str
    url: str
    kind: BackendKind = "ollama"
    max_concurrency: int = 4
    weight: float = 1.0
    enabled: bool = True
    healthy: bool = False
    in_flight: int = 0
    models: frozenset[str] = frozenset()
    version: str | None = None
    last_error: str | None = None
    last_check_at: float | None = None
    last_ok_at: float | None = None
    consecutive_failures: int = 0
    served: int = 0
    failed: int = 0
    # Engine-reported load; None when the backend exposes no metrics (Ollama has none).
    signals: EngineSignals | None = None
    # A draining backend takes no new requests and finishes what it has.
    draining: bool = False
    # Models resident in memory now (Ollama /api/ps, or every model of a vLLM server),
    # with when each is expected to unload (keep-alive; inf = never).
    loaded: dict[str, float] = field(default_factory=dict)
    # Size in bytes of each model it holds (from /api/tags); 0 when unknown.
    model_bytes: dict[str, int] = field(default_factory=dict)
    # Memory for models (config ``vram_gb``, later the agent's report); None = unknown.
    vram_bytes: int | None = None
    # Most models resident at once (Ollama's OLLAMA_MAX_LOADED_MODELS); None = unknown.
    max_loaded_models: int | None = None
    # Requests in flight per model, and the cap per backend:model (None = max_concurrency).
    in_flight_by_model: dict[str, int] = field(default_factory=dict)
    max_per_model: int | None = None
    # The engine keeps a prompt prefix cache (vLLM, llama.cpp): prefix affinity pays.
    prefix_cache: bool = False
    # Where the backend came from: "config" (the settings), "registered" (the admin API,
    # kept in the store), "agent" (a node agent's heartbeat), "worker" (spawned) or
    # "demo" (`corral serve --demo`).
    origin: str = "config"
    # A node whose agent went silent: out of routing, and no probe brings it back;
    # only the agent's next heartbeat does (the engine may still answer, unwatched).
    offline: bool = False
    # The operator's marks (config or admin API): free-form tags and key=value labels.
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def free_slots(self) -> int:
        return self.max_concurrency - self.in_flight

    @property
    def routable(self) -> bool:
        return self.healthy and self.enabled

    def holds(self, model: str) -> bool:
        return model in self.models

    def is_loaded(self, model: str, now: float) -> bool:
        return self.loaded.get(model, -1.0) > now

    def has_slot(self, model: str) -> bool:
        """A free slot on the backend and on backend:model."""
        if self.in_flight >= self.max_concurrency:
            return False
        cap = self.max_per_model
        return cap is None or self.in_flight_by_model.get(model, 0) < cap

    @property
    def candidate(self) -> bool:
        """Up, enabled and not draining: may take new requests."""
        return self.healthy and self.enabled and not self.draining


@dataclass(slots=True, frozen=True)
class RequestInfo:
    """The facts about a request that queueing and routing may look at.

    ``tenant`` is whose fair share the request draws on (the key's user or group; until
    identity exists, a header or the client address); ``weight`` that tenant's share;
    ``priority`` its class (higher is served first, aging lifts waiting requests).
    ``prompt_tokens`` is an estimate made before the request is sent; ``prefix`` the
    chained hashes of its prompt's leading blocks (equal leading hashes = shared prefix).
    """

    model: str
    endpoint: str
    request_id: str = ""
    session: str | None = None
    tenant: str = ""
    weight: float = 1.0
    priority: int = 0
    prompt_tokens: int = 0
    max_tokens: int | None = None
    prefix: tuple[int, ...] = ()
    max_wait_s: float | None = None  # the client's own queueing deadline, if shorter


@dataclass(slots=True, frozen=True)
class Outcome:
    """How one dispatched request ended, as the scheduler and policies learn it.

    ``ttft_s`` is the time to first byte/token from dispatch (None if none came);
    ``load_s`` the model load time the backend reported (Ollama's load_duration);
    ``transient`` says a failure is worth retrying elsewhere (connect, timeout, 5xx,
    busy) as opposed to permanent (bad request, model not found).
    """

    ok: bool
    ttft_s: float | None = None
    duration_s: float = 0.0
    load_s: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    transient: bool = True
    status: int = 200


@dataclass(slots=True, frozen=True)
class RouteDecision:
    """Where a request went and why: logged, sent back as headers, stored with usage."""

    backend: str
    policy: str
    reason: str
    attempt: int = 1
    queued_s: float = 0.0
    tried: tuple[str, ...] = field(default=())
