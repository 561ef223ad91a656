"""What a model load costs on a backend: its duration, its queue and its evictions.

Used by the ``corral`` cost model (:mod:`corral.core.costmodel`). Ollama loads a
model on first use, one load at a time per server, and makes room by unloading
others (``OLLAMA_MAX_LOADED_MODELS``, default 3, and VRAM). A load takes
``load_base_s + size / load_bytes_per_s`` (the simulator's and roughly a real
node's shape) until the backend's own reports (``load_duration``) teach better.

The gateway also remembers the loads it caused: a request sent to a node that must
load the model starts a load that later requests for that model share (they pay
only what is left of it), and that delays any other model's load there.
"""

from __future__ import annotations

from corral.core.policy_base import ModelStats, RouteStats
from corral.core.types import BackendState

__all__ = ["LoadCost"]


class LoadCost:
    def __init__(
        self,
        stats: RouteStats,
        *,
        load_base_s: float,
        load_bytes_per_s: float,
        default_model_bytes: float,
        max_loaded_models: int,
        evict_weight: float,
        recent_s: float,
        default_service_s: float,
    ) -> None:
        self.stats = stats
        self.load_base_s = load_base_s
        self.load_bytes_per_s = load_bytes_per_s
        self.default_model_bytes = default_model_bytes
        self.max_loaded_models = max_loaded_models
        self.evict_weight = evict_weight
        self.recent_s = recent_s
        self.default_service_s = default_service_s
        # backend -> model -> when the load we started should be done
        self._loading: dict[str, dict[str, float]] = {}
        # backend -> when its queue of loads (ours) should be empty
        self._busy_until: dict[str, float] = {}

    def load_time(self, b: BackendState, model: str, st: ModelStats | None) -> float:
        """Learned load time of backend:model, else the size-based guess."""
        if st is not None and st.load is not None:
            return st.load
        size = b.model_bytes.get(model) or self.default_model_bytes
        return self.load_base_s + size / self.load_bytes_per_s

    def left(self, backend: str, model: str, now: float) -> float | None:
        """Seconds left of a load of ours under way, or None when none is."""
        loading = self._loading.get(backend)
        if loading is None:
            return None
        ready = loading.get(model)
        return ready - now if ready is not None and ready > now else None

    def queued(self, backend: str, now: float) -> float:
        """Seconds until the loads already under way on ``backend`` are done."""
        until = self._busy_until.get(backend)
        return until - now if until is not None and until > now else 0.0

    def started(self, b: BackendState, model: str, now: float, st: ModelStats | None) -> None:
        """A request went to ``b`` that must load ``model`` (unless one is loading)."""
        if self.left(b.name, model, now) is not None:
            return
        ready = now + self.queued(b.name, now) + self.load_time(b, model, st)
        self._loading.setdefault(b.name, {})[model] = ready
        self._busy_until[b.name] = ready

    def answered(self, backend: str, model: str) -> None:
        """The model answered on ``backend``: whatever load there was is over."""
        loading = self._loading.get(backend)
        if loading is not None:
            loading.pop(model, None)

    def forget(self, backend: str) -> None:
        self._loading.pop(backend, None)
        self._busy_until.pop(backend, None)

    def eviction(self, b: BackendState, model: str, now: float) -> float:
        """Seconds charged for the models that loading ``model`` on ``b`` pushes out.

        Fits when the VRAM (if known) or the loaded-models count allows it. Else the
        cheapest victims go first (Ollama picks idle ones first, too): a busy victim
        delays the load until it drains (about one service time) and a victim used
        within ``recent_s`` must be reloaded by someone (``evict_weight`` x its load).
        """
        vram = b.vram_bytes
        sizes = b.model_bytes
        default = self.default_model_bytes
        count = 0
        used = 0.0
        for m, until in b.loaded.items():
            if until > now and m != model:
                count += 1
                if vram is not None:
                    used += sizes.get(m) or default
        loading = self._loading.get(b.name)
        if loading:
            for m, ready in loading.items():
                if ready > now and m != model and m not in b.loaded:
                    count += 1
                    used += sizes.get(m) or default
        if vram is not None:
            excess = used + (sizes.get(model) or default) - vram
        else:
            excess = float(count + 1 - self.max_loaded_models)
        if excess <= 0:
            return 0.0
        resident = [m for m, until in b.loaded.items() if until > now and m != model]
        victims = sorted((self._victim_cost(b, m, now), m) for m in resident)
        total = 0.0
        for cost, m in victims:
            if excess <= 0:
                break
            total += cost
            excess -= (sizes.get(m) or default) if vram is not None else 1.0
        return total

    def _victim_cost(self, b: BackendState, model: str, now: float) -> float:
        st = self.stats.get(b.name, model)
        reload = self.evict_weight * self.load_time(b, model, st)
        if b.in_flight_by_model.get(model):
            # Ollama lets a busy runner drain before unloading it; our load waits.
            service = st.service if st is not None and st.service else self.default_service_s
            return service + reload
        if st is not None and now - st.last_ok < self.recent_s:
            return reload
        return 0.0
