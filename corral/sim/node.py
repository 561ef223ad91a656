"""The live Ollama node: one pure :class:`NodeModel` on the asyncio clock.

:class:`~corral.sim.runtime.LoopRuntime` drives the model (timer, inboxes, faults,
counters); :class:`NodeRuntime` adds the node's state that is not scheduling: what is
on disk (model metadata, blobs) and the Ollama shapes of refusals and ``/_sim/state``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from corral.sim.catalogue import Catalogue, ModelSpec, normalize_name
from corral.sim.faults import RUNNER_CRASH, Faults
from corral.sim.model import Admission, NodeModel, NodeStats, ReqId, Request
from corral.sim.runtime import Counters, Inbox, LoopRuntime
from corral.sim.wire import BUSY_MESSAGE

__all__ = ["RUNTIME", "Counters", "Inbox", "ModelMeta", "NodeRuntime"]


@dataclass
class ModelMeta:
    """What /api/show and /api/tags need beyond the spec."""

    modified_at: float
    system: str = ""
    template: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    parent: str = ""


class NodeRuntime(LoopRuntime[NodeModel]):
    """The live Ollama node: the driver, plus what is on disk (meta, blobs)."""

    def __init__(
        self,
        model: NodeModel,
        catalogue: Catalogue,
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, faults, seed)
        self.catalogue = catalogue
        self.meta: dict[str, ModelMeta] = {}
        self.blobs: dict[str, int] = {}  # digest -> size; the bytes are not kept
        for spec in model.present():
            self.meta[spec.name] = ModelMeta(modified_at=time.time())

    def epoch(self, t: float) -> float:
        """Wall-clock seconds for model time ``t`` (inf stays inf)."""
        return time.time() + (t - self.now()) if math.isfinite(t) else math.inf

    # ------------------------------------------------------------ requests
    def submit(self, req: Request) -> tuple[Admission, Inbox | None]:
        adm, inbox = self._open(req, self.now())
        if adm in (Admission.BUSY, Admission.NOT_FOUND):
            del self._inboxes[req.req_id]
            return adm, None
        self._kick()
        return adm, inbox

    def cancel(self, req_id: ReqId) -> None:
        self._inboxes.pop(req_id, None)
        self.model.cancel(req_id, self.now())
        self._kick()

    # -------------------------------------------------------------- models
    def spec(self, name: str) -> ModelSpec | None:
        return self.model.spec(name)

    def add_model(self, spec: ModelSpec, meta: ModelMeta | None = None) -> None:
        self.model.add_model(spec)
        self.meta[spec.name] = meta or ModelMeta(modified_at=time.time())

    def remove_model(self, name: str) -> bool:
        self.meta.pop(normalize_name(name), None)
        return self.model.remove_model(name)

    def preload(self, name: str) -> None:
        self.model.preload(name, self.now())
        self._kick()

    # -------------------------------------------------------------- faults
    def refusal(self) -> tuple[int, str] | None:
        """(status, message) when a fault turns an inference request away before any work."""
        fault = self._refusing_fault()
        if fault is None:
            return None
        return (503, BUSY_MESSAGE) if fault == "busy" else (500, RUNNER_CRASH)

    def _clear_stats(self) -> None:
        self.model.stats = NodeStats()

    def state(self) -> dict[str, Any]:
        now = self.now()
        loaded = []
        for info in self.model.runners(now):
            loaded.append(
                {
                    "name": info.model,
                    "state": info.state,
                    "num_ctx": info.num_ctx,
                    "size_vram": info.size_vram,
                    "keep_alive": None if math.isinf(info.keep_alive) else info.keep_alive,
                    "expires_in": None
                    if math.isinf(info.expires_at)
                    else round(info.expires_at - now, 3),
                    "active": info.active,
                    "waiting": info.waiting,
                }
            )
        cfg = self.model.config
        return {
            "models": {
                "present": sorted(s.name for s in self.model.present()),
                "loaded": loaded,
            },
            "in_flight": self.model.in_flight,
            "pending_loads": self.model.pending_loads,
            "counters": self.counters.to_dict(),
            "scheduler": asdict(self.model.stats),
            "faults": self.faults.to_dict(),
            "config": {
                "num_parallel": cfg.num_parallel,
                "max_loaded_models": cfg.max_loaded_models,
                "vram_bytes": cfg.vram_bytes,
                "max_queue": cfg.max_queue,
                "keep_alive": None if math.isinf(cfg.keep_alive) else cfg.keep_alive,
                "speed": cfg.speed,
                "zero_delay": cfg.zero_delay,
                "seed": cfg.seed,
            },
        }


RUNTIME = web.AppKey("runtime", NodeRuntime)
