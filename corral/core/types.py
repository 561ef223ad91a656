"""Plain domain types shared by the scheduler, the policies and the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["BackendKind", "BackendState", "EngineSignals", "RequestInfo", "RouteDecision"]

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

    @property
    def free_slots(self) -> int:
        return self.max_concurrency - self.in_flight

    @property
    def routable(self) -> bool:
        return self.healthy and self.enabled

    def holds(self, model: str) -> bool:
        return model in self.models


@dataclass(slots=True, frozen=True)
class RequestInfo:
    """The facts about a request that routing may look at."""

    model: str
    endpoint: str
    request_id: str = ""
    session: str | None = None


@dataclass(slots=True, frozen=True)
class RouteDecision:
    """Where a request went and why: logged, sent back as headers, stored with usage."""

    backend: str
    policy: str
    reason: str
    attempt: int = 1
    queued_s: float = 0.0
    tried: tuple[str, ...] = field(default=())
