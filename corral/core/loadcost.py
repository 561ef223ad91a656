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

import math

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
        memory_factor: float,
    ) -> None:
        self.stats = stats
        self.load_base_s = load_base_s
        self.load_bytes_per_s = load_bytes_per_s
        self.default_model_bytes = default_model_bytes
        self.max_loaded_models = max_loaded_models
        self.evict_weight = evict_weight
        self.recent_s = recent_s
        self.default_service_s = default_service_s
        self.memory_factor = memory_factor
        # The backends seen so far, to tell whether a victim is resident elsewhere.
        self.fleet: dict[str, BackendState] = {}
        # backend -> model -> when the load we started should be done
        self._loading: dict[str, dict[str, float]] = {}
        # backend -> when its queue of loads (ours) should be empty
        self._busy_until: dict[str, float] = {}
        # backend -> model a load of ours pushes out -> when that load should be done
        self._leaving: dict[str, dict[str, float]] = {}

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
        """A request went to ``b`` that must load ``model`` (unless one is loading).

        The models the load will push out are marked as leaving: until a probe
        taken after the load should be done says otherwise, they count as not
        resident there, so no new work keeps a busy victim from draining (Ollama's
        load waits for it) and nobody is sent to a copy about to vanish.
        """
        if self.left(b.name, model, now) is not None:
            return
        ready = now + self.queued(b.name, now) + self.load_time(b, model, st)
        for victim in self.victims(b, model, now):
            if b.in_flight_by_model.get(victim):
                vst = self.stats.get(b.name, victim)
                ready += vst.service if vst is not None and vst.service else self.default_service_s
        for victim in self.victims(b, model, now):
            self._leaving.setdefault(b.name, {})[victim] = ready
        self._loading.setdefault(b.name, {})[model] = ready
        self._busy_until[b.name] = ready

    def leaving(self, b: BackendState, model: str) -> bool:
        """Is ``model`` being pushed out of ``b`` by a load we started?"""
        marks = self._leaving.get(b.name)
        if not marks:
            return False
        until = marks.get(model)
        if until is None:
            return False
        checked = b.last_check_at
        if checked is not None and checked > until:
            del marks[model]  # a probe after the load: it knows better now
            if not marks:
                del self._leaving[b.name]
            return False
        return True

    @property
    def any_leaving(self) -> bool:
        return bool(self._leaving)

    def answered(self, backend: str, model: str) -> None:
        """The model answered on ``backend``: whatever load there was is over."""
        loading = self._loading.get(backend)
        if loading is not None:
            loading.pop(model, None)

    def forget(self, backend: str) -> None:
        self.fleet.pop(backend, None)
        self._loading.pop(backend, None)
        self._busy_until.pop(backend, None)
        self._leaving.pop(backend, None)

    def victims(self, b: BackendState, model: str, now: float) -> list[str]:
        """The models Ollama would unload to make room for ``model`` on ``b``.

        A load fits while both the loaded-models count (the backend's own
        ``max_loaded_models`` when configured, else the policy's) and,
        when known, the VRAM allow it; a model takes ``memory_factor`` x its size on
        disk (weights plus the KV cache of its parallel slots). Ollama unloads idle
        runners first, the one expiring soonest first, then busy ones.
        """
        vram = b.vram_bytes
        sizes = b.model_bytes
        default = self.default_model_bytes
        marks = self._leaving.get(b.name)
        resident: list[tuple[bool, float, str]] = []
        used = 0.0
        for m, until in b.loaded.items():
            if until > now and m != model and not (marks and m in marks):
                resident.append((bool(b.in_flight_by_model.get(m)), until, m))
                used += sizes.get(m) or default
        loading = self._loading.get(b.name)
        if loading:  # loads we started count as resident (they will be), and busy
            for m, ready in loading.items():
                if ready > now and m != model and m not in b.loaded:
                    resident.append((True, math.inf, m))
                    used += sizes.get(m) or default
        over_count = len(resident) + 1 - (b.max_loaded_models or self.max_loaded_models)
        factor = self.memory_factor
        over_bytes = (
            (used + (sizes.get(model) or default)) * factor - vram if vram is not None else 0.0
        )
        if over_count <= 0 and over_bytes <= 0:
            return []
        resident.sort()
        out: list[str] = []
        for _, _, m in resident:
            if over_count <= 0 and over_bytes <= 0:
                break
            out.append(m)
            over_count -= 1
            over_bytes -= (sizes.get(m) or default) * factor
        return out

    def eviction(self, b: BackendState, model: str, now: float) -> float:
        """Seconds charged for the models that loading ``model`` on ``b`` pushes out."""
        return sum(self._victim_cost(b, m, now) for m in self.victims(b, model, now))

    def _victim_cost(self, b: BackendState, model: str, now: float) -> float:
        """What unloading ``model`` from ``b`` costs.

        Busy: Ollama lets it drain first, so our load waits about a service time.
        Used within ``recent_s``: its next request must load it again, a full load
        when ``b`` holds its only resident copy we know of, else ``evict_weight`` of
        one (the other copies take the demand). Idle and unused lately: nothing.
        """
        st = self.stats.get(b.name, model)
        cost = 0.0
        if b.in_flight_by_model.get(model):
            cost = st.service if st is not None and st.service else self.default_service_s
        elif st is None or now - st.last_ok >= self.recent_s:
            return 0.0
        share = 1.0
        for other in self.fleet.values():
            if other is not b and other.loaded.get(model, -1.0) > now:
                share = self.evict_weight
                break
        return cost + share * self.load_time(b, model, st)
