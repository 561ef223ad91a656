"""The live driver of a simulated vLLM server: one pure :class:`VllmModel` on the asyncio clock.

:class:`~corral.sim.runtime.LoopRuntime` drives the model (timer, inboxes, faults,
counters); :class:`VllmRuntime` adds what is not scheduling: the Prometheus metrics,
the tokenizer's memory, and vLLM's shapes of refusals and ``/_sim/state``. Unlike the
Ollama node, the engine steps to now on every submit, cancel and fault change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from corral.sim.catalogue import ModelSpec
from corral.sim.faults import Faults
from corral.sim.model_types import Admission, Event, EventKind, ReqId, Request, VllmStats
from corral.sim.runtime import Inbox, LoopRuntime
from corral.sim.vllm_metrics import MetricsRecorder, Snapshot, render
from corral.sim.vllm_model import VllmModel
from corral.sim.vllm_tokens import Vocab
from corral.sim.vllm_wire import ENGINE_DEAD, ApiError, ServedName, id_maker

__all__ = ["VLLM_RUNTIME", "VllmRuntime"]

# A vLLM release whose API the simulator follows: nested errors, `reasoning` (no longer
# `reasoning_content`), the V1 engine's metrics.
VLLM_VERSION = "0.17.1"


class VllmRuntime(LoopRuntime[VllmModel]):
    """The live vLLM server: the driver, plus metrics, the tokenizer and request ids."""

    def __init__(self, model: VllmModel, faults: Faults | None = None, seed: int = 0) -> None:
        super().__init__(model, faults, seed)
        self.spec: ModelSpec = model.spec
        self.served = ServedName(model.spec.name)
        self.vocab = Vocab()
        self.metrics = MetricsRecorder(created=time.time())
        self.version = VLLM_VERSION
        self.created = int(time.time())
        self.new_id: Callable[[str], str] = id_maker(seed)
        self._arrival: dict[ReqId, float] = {}

    # ------------------------------------------------------------ requests
    def submit(self, req: Request) -> Inbox:
        """Queue a request in the engine; ApiError when the engine refuses it."""
        now = self.now()
        self._arrival[req.req_id] = now
        adm, inbox = self._open(req, now)
        if adm is Admission.REJECTED:
            self._forget(req.req_id)
            # Validation caught every too-long request already; this is a safety net.
            raise ApiError(400, "The request does not fit in max_model_len.")
        self._advance()
        return inbox

    def cancel(self, req_id: ReqId) -> None:
        """The client left: abort the sequence in the engine (vLLM's abort on disconnect)."""
        if self._inboxes.pop(req_id, None) is None and req_id not in self._arrival:
            return
        self._arrival.pop(req_id, None)
        if self.model.cancel(req_id, self.now()):
            self.metrics.finished("abort")
        self._advance()

    def _forget(self, req_id: ReqId) -> None:
        self._inboxes.pop(req_id, None)
        self._arrival.pop(req_id, None)

    # -------------------------------------------------------------- driver
    def sync(self) -> None:
        """Bring the model up to now (gauges read after this are current)."""
        self._advance()

    def _settle(self) -> None:
        # Unlike Ollama's node, the engine steps at once on any change.
        self._advance()

    def _observe(self, ev: Event) -> None:
        if ev.req_id is None:
            return
        arrived = self._arrival.get(ev.req_id)
        if ev.kind is EventKind.FIRST_TOKEN and arrived is not None:
            self.metrics.first_token(ev.time - arrived)
        elif ev.kind is EventKind.DONE:
            if arrived is not None:
                # The engine's finish reasons: a tool call is a "stop" to it.
                reason = "length" if ev.done_reason == "length" else "stop"
                self.metrics.done(ev.time - arrived, reason)
            self._arrival.pop(ev.req_id, None)

    # -------------------------------------------------------------- faults
    def refusal(self) -> ApiError | None:
        """An error a fault gives an inference request before any work, or None."""
        fault = self._refusing_fault()
        if fault is None:
            return None
        if fault == "busy":
            return ApiError(503, "Service Unavailable", "Service Unavailable")
        return ApiError(500, ENGINE_DEAD, "InternalServerError")

    def _clear_stats(self) -> None:
        # The prefix cache keeps its blocks.
        self.model.stats = VllmStats()
        self.metrics = MetricsRecorder(created=time.time())

    # --------------------------------------------------------------- views
    def snapshot(self) -> Snapshot:
        self.sync()
        m = self.model
        return Snapshot(
            running=m.num_running,
            waiting=m.num_waiting,
            kv_cache_usage=m.kv_cache_usage,
            stats=m.stats,
        )

    def exposition(self) -> str:
        return render(self.spec.name, self.snapshot(), self.metrics)

    def state(self) -> dict[str, Any]:
        snap = self.snapshot()
        m, cfg = self.model, self.model.config
        return {
            "dialect": "vllm",
            "model": self.spec.name,
            "running": snap.running,
            "waiting": snap.waiting,
            "kv_cache": {
                "usage": round(snap.kv_cache_usage, 6),
                "blocks": m.pool.num_blocks,
                "used_blocks": m.pool.used_blocks,
                "cached_blocks": m.pool.cached_blocks,
                "block_size": m.pool.block_size,
            },
            "prefix_cache": {
                "queries": snap.stats.prefix_queries,
                "hits": snap.stats.prefix_hits,
                "preempted_queries": snap.stats.preempted_queries,
                "preempted_hits": snap.stats.preempted_hits,
            },
            "in_flight": m.in_flight,
            "counters": self.counters.to_dict(),
            "engine": asdict(snap.stats),
            "faults": self.faults.to_dict(),
            "config": {
                "max_num_seqs": cfg.max_num_seqs,
                "max_num_batched_tokens": cfg.max_num_batched_tokens,
                "max_model_len": m.max_model_len,
                "kv_cache_tokens": m.pool.num_blocks * m.pool.block_size,
                "enable_prefix_caching": cfg.enable_prefix_caching,
                "speed": cfg.speed,
                "zero_delay": cfg.zero_delay,
                "seed": cfg.seed,
            },
        }


VLLM_RUNTIME = web.AppKey("vllm_runtime", VllmRuntime)
