"""The live driver of a simulated vLLM server: one pure :class:`VllmModel` on the asyncio clock.

Like :class:`~corral.sim.node.NodeRuntime` it is the only place that reads a clock: it
arms a timer at the model's ``next_event_time()``, routes events to each request's
:class:`~corral.sim.node.Inbox`, and keeps what is not scheduling: faults, counters,
the Prometheus metrics and the tokenizer's memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from corral.sim.catalogue import ModelSpec
from corral.sim.faults import FaultDice, Faults
from corral.sim.model_types import Admission, EventKind, ReqId, Request, VllmStats
from corral.sim.node import Counters, Inbox
from corral.sim.vllm_metrics import MetricsRecorder, Snapshot, render
from corral.sim.vllm_model import VllmModel
from corral.sim.vllm_tokens import Vocab
from corral.sim.vllm_wire import ENGINE_DEAD, ApiError, ServedName, id_maker

__all__ = ["VLLM_RUNTIME", "VllmRuntime"]

# A vLLM release whose API the simulator follows: nested errors, `reasoning` (no longer
# `reasoning_content`), the V1 engine's metrics.
VLLM_VERSION = "0.17.1"


class VllmRuntime:
    def __init__(self, model: VllmModel, faults: Faults | None = None, seed: int = 0) -> None:
        self.loop = asyncio.get_running_loop()
        self.model = model
        self.spec: ModelSpec = model.spec
        self.served = ServedName(model.spec.name)
        self.faults = faults or Faults()
        self.seed = seed
        self.dice = FaultDice(seed)
        self.counters = Counters()
        self.vocab = Vocab()
        self.metrics = MetricsRecorder(created=time.time())
        self.version = VLLM_VERSION
        self.created = int(time.time())
        self.new_id: Callable[[str], str] = id_maker(seed)
        self._t0 = self.loop.time()
        self._next = 0
        self._inboxes: dict[ReqId, Inbox] = {}
        self._arrival: dict[ReqId, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = math.inf
        self._closed = False
        if self.faults.slow != 1.0:
            model.set_slowdown(self.faults.slow, self.now())

    # --------------------------------------------------------------- clock
    def now(self) -> float:
        return self.loop.time() - self._t0

    def next_id(self) -> int:
        self._next += 1
        return self._next

    # ------------------------------------------------------------ requests
    def submit(self, req: Request) -> Inbox:
        """Queue a request in the engine; ApiError when the engine refuses it."""
        now = self.now()
        inbox = Inbox(self.loop)
        self._inboxes[req.req_id] = inbox
        self._arrival[req.req_id] = now
        adm = self.model.submit(req, now)
        if adm is Admission.REJECTED:
            self._forget(req.req_id)
            # Validation caught every too-long request already; this is a safety net.
            raise ApiError(400, "The request does not fit in max_model_len.")
        self._dispatch()
        return inbox

    def cancel(self, req_id: ReqId) -> None:
        """The client left: abort the sequence in the engine (vLLM's abort on disconnect)."""
        if self._inboxes.pop(req_id, None) is None and req_id not in self._arrival:
            return
        self._arrival.pop(req_id, None)
        if self.model.cancel(req_id, self.now()):
            self.metrics.finished("abort")
        self._dispatch()

    def _forget(self, req_id: ReqId) -> None:
        self._inboxes.pop(req_id, None)
        self._arrival.pop(req_id, None)

    # -------------------------------------------------------------- driver
    def sync(self) -> None:
        """Bring the model up to now (gauges read after this are current)."""
        self._dispatch()

    def _dispatch(self, at: float = -math.inf) -> None:
        for ev in self.model.advance(max(self.now(), at)):
            if ev.req_id is None:
                continue
            arrived = self._arrival.get(ev.req_id)
            if ev.kind is EventKind.FIRST_TOKEN and arrived is not None:
                self.metrics.first_token(ev.time - arrived)
            elif ev.kind is EventKind.DONE:
                if arrived is not None:
                    # The engine's finish reasons: a tool call is a "stop" to it.
                    reason = "length" if ev.done_reason == "length" else "stop"
                    self.metrics.done(ev.time - arrived, reason)
                self._arrival.pop(ev.req_id, None)
            inbox = self._inboxes.get(ev.req_id)
            if inbox is not None:
                inbox.push(ev)
                if ev.kind is EventKind.DONE:
                    del self._inboxes[ev.req_id]
        self._kick()

    def _kick(self) -> None:
        if self._closed:
            return
        t = self.model.next_event_time()
        if t is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_when = None, math.inf
            return
        when = self._t0 + t
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        # asyncio may run a timer up to one clock resolution early: it is due all the same.
        due = self._timer_when - self._t0
        self._timer, self._timer_when = None, math.inf
        self._dispatch(due)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -------------------------------------------------------------- faults
    def refusal(self) -> ApiError | None:
        """An error a fault gives an inference request before any work, or None."""
        if self.faults.busy:
            self.counters.errors["busy"] += 1
            return ApiError(503, "Service Unavailable", "Service Unavailable")
        if self.dice.roll(self.faults.error_rate):
            self.counters.errors["error_rate"] += 1
            return ApiError(500, ENGINE_DEAD, "InternalServerError")
        return None

    def set_faults(self, faults: Faults) -> None:
        if faults.slow != self.faults.slow:
            self.model.set_slowdown(faults.slow, self.now())
        self.faults = faults
        self._dispatch()

    def reset(self) -> None:
        """Clear faults, counters and metrics (the prefix cache keeps its blocks)."""
        self.set_faults(Faults())
        self.counters = Counters()
        self.model.stats = VllmStats()
        self.metrics = MetricsRecorder(created=time.time())
        self.dice = FaultDice(self.seed)

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
