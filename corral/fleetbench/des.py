"""The fleet benchmark's discrete-event simulation: the real scheduler, virtual time.

One run = one policy over one arrival stream. The clock jumps from event to event:
arrivals, retries after backoff, health probes, faults and queue deadlines sit in a
heap; the nodes' own events (first token, done) come from each node model's
``next_event_time``/``advance``. The gateway side is the code the live gateway runs —
:class:`~corral.core.scheduler.Scheduler` with the policy, the fair queue, the
circuit breakers and :class:`~corral.core.retry.RetryPolicy` — driven the way
``corral.adapters.fleet`` and ``corral.app.relay`` drive it:

* submit, then pump; bound tickets are dispatched to their node at once;
* an attempt that fails before its first token is released as a transient failure,
  its backend excluded, and retried after a backoff (up to ``retry_attempts``); one
  that fails while streaming is lost (``failed_mid_stream``), as for a real client;
* a connect error marks the backend down at once (the relay's ``report_unreachable``);
* a probe every ``probe_interval_s`` refreshes health, model lists, what is loaded
  (Ollama ``/api/ps``) and vLLM's engine signals; between probes a completed request
  extends its model's residency by the keep-alive.
"""

from __future__ import annotations

import heapq
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from corral.core.breakers import BreakerBoard
from corral.core.errors import ModelNotFound, NoHealthyBackend, QueueFull
from corral.core.fairqueue import Ticket
from corral.core.policies import make_policy
from corral.core.retry import (
    NO_RESPONSE,
    classify,
)
from corral.core.scheduler import Scheduler
from corral.core.types import BackendState, Outcome, RequestInfo
from corral.fleetbench.gateway_view import VLLM_BLOCK, Retries, engine_prefix_bound, refresh
from corral.fleetbench.metrics import Collector, RequestRecord, Result, Status
from corral.fleetbench.nodes import SimNode
from corral.fleetbench.scenario import Scenario
from corral.fleetbench.workload import Arrival, engine_prefix
from corral.sim.catalogue import Catalogue
from corral.sim.model_types import Admission, EventKind
from corral.sim.vllm_kv import chain_hashes

__all__ = ["Run", "Simulation", "simulate"]

_ARRIVE, _RETRY, _PROBE, _FAULT_START, _FAULT_END, _EXPIRE = range(6)
_HORIZON_S = 100_000.0  # virtual seconds past the last arrival: a stuck run, not a slow one


@dataclass(eq=False, slots=True)
class _Req:
    arrival: Arrival
    info: RequestInfo
    engine_prefix: tuple[int, ...]
    attempt: int = 0  # attempts bound so far
    failures: int = 0
    tried: frozenset[str] = frozenset()
    ticket: Ticket | None = None
    node_id: int = -1
    dispatched_at: float = 0.0
    first_at: float | None = None
    done: bool = False


@dataclass(slots=True)
class Run:
    """One policy's run: the scored result, the raw records and the run's own counts."""

    result: Result
    records: list[RequestRecord]
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), **self.extras}


class Simulation:
    def __init__(
        self, scenario: Scenario, policy: str, arrivals: list[Arrival], *, seed: int
    ) -> None:
        self.scenario = scenario
        self.policy_name = policy
        self.arrivals = arrivals
        gw = scenario.gateway
        catalogue = Catalogue.builtin()
        self.nodes = {
            spec.name: SimNode(spec, catalogue, seed * 100 + i)
            for i, spec in enumerate(scenario.nodes)
        }
        breakers = BreakerBoard() if gw.breakers else None
        self.sched = Scheduler(
            make_policy(policy, gw.policy_options.get(policy)),
            max_waiting=gw.max_waiting,
            max_waiting_per_tenant=gw.max_waiting_per_tenant,
            aging_s=gw.aging_s,
            breakers=breakers,
        )
        if hasattr(self.sched, "keep_alive_s"):
            self.sched.keep_alive_s = gw.keep_alive_s
        for spec in scenario.nodes:
            state = BackendState(
                name=spec.name,
                url=f"sim://{spec.name}",
                kind="openai" if spec.kind == "vllm" else "ollama",
                max_concurrency=spec.max_concurrency,
                max_per_model=spec.max_per_model,
                prefix_cache=spec.kind == "vllm",
                vram_bytes=int(spec.vram_gb * 1024**3) if spec.kind == "ollama" else None,
                max_loaded_models=spec.max_loaded_models if spec.kind == "ollama" else None,
            )
            node = self.nodes[spec.name]
            state.model_bytes = node.model_bytes()
            self.sched.add_backend(state)
        self.retry = Retries(
            gw.retry_attempts, gw.backoff_s, gw.backoff_max_s, gw.retry_budget, seed
        )
        self.collector = Collector(
            policy, ttft_slo_s=scenario.ttft_slo_s, fairness_windows=self._windows()
        )
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._next_arrival = 0
        self._open = 0
        self._node_ids = 0
        self._live: dict[int, _Req] = {}
        self._bound: deque[Ticket] = deque()
        self._cv_samples: list[float] = []
        self.counts = {
            "retries": 0,
            "failed_mid_stream": 0,
            "failed_before_stream": 0,
            "queue_timeouts": 0,
            "max_in_flight_excess": 0,
        }

    # -- the loop -------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, payload))

    def _at(self, fraction: float) -> float:
        """A point of the arrival span given as a fraction of it."""
        if not self.arrivals:
            return 0.0
        t0, t1 = self.arrivals[0].t, self.arrivals[-1].t
        return t0 + fraction * (t1 - t0)

    def _windows(self) -> list[tuple[float, float]]:
        return [(self._at(a), self._at(b)) for a, b in self.scenario.fairness_windows]

    def run(self) -> Run:
        if self.arrivals:
            self._push(self.arrivals[0].t, _ARRIVE)
        self._probe(0.0)
        self._push(self.scenario.gateway.probe_interval_s, _PROBE)
        for fault in self.scenario.faults:
            self._push(self._at(fault.start), _FAULT_START, fault)
            self._push(self._at(fault.end), _FAULT_END, fault)
        nodes = list(self.nodes.values())
        horizon = (self.arrivals[-1].t if self.arrivals else 0.0) + _HORIZON_S
        while self._open or self._next_arrival < len(self.arrivals):
            if self.now > horizon:
                raise RuntimeError(f"{self._open} requests never ended (simulation stuck)")
            t_heap = self._heap[0][0] if self._heap else float("inf")
            first: SimNode | None = None
            t_node = t_heap
            for node in nodes:
                t = node.next_event_time()
                if t is not None and t < t_node:
                    first, t_node = node, t
            if first is not None:
                self.now = max(self.now, t_node)
                self._node_events(first, self.now)
            else:
                t, _, kind, payload = heapq.heappop(self._heap)
                self.now = max(self.now, t)
                self._handle(kind, payload, self.now)
            self._drain(self.now)
        return self._finish()

    def _handle(self, kind: int, payload: Any, now: float) -> None:
        if kind == _ARRIVE:
            self._arrive(now)
        elif kind == _RETRY:
            self._try(payload, now)
        elif kind == _PROBE:
            self._probe(now)
            self._push(now + self.scenario.gateway.probe_interval_s, _PROBE)
        elif kind == _FAULT_START:
            self._fault_start(payload, now)
        elif kind == _FAULT_END:
            self._fault_end(payload, now)
        elif kind == _EXPIRE:
            for ticket in self.sched.expire(now):
                req = ticket.token
                assert isinstance(req, _Req)
                req.ticket = None
                self.counts["queue_timeouts"] += 1
                self._end(req, now, "failed" if req.failures else "rejected", queued=True)

    # -- requests -------------------------------------------------------------------

    def _arrive(self, now: float) -> None:
        a = self.arrivals[self._next_arrival]
        self._next_arrival += 1
        if self._next_arrival < len(self.arrivals):
            self._push(self.arrivals[self._next_arrival].t, _ARRIVE)
        block = self.scenario.workload.block_tokens
        info = RequestInfo(
            model=a.model,
            endpoint="/api/chat",
            request_id=str(self._next_arrival),
            session=a.session,
            tenant=a.tenant,
            weight=a.weight,
            priority=a.priority,
            prompt_tokens=a.prompt_tokens,
            prefix=chain_hashes(a.prefix),
        )
        prefix = engine_prefix(a.prefix, block, VLLM_BLOCK) if a.prefix else ()
        req = _Req(a, info, prefix)
        self._open += 1
        self.retry.on_request(now)
        self._try(req, now)

    def _try(self, req: _Req, now: float) -> None:
        try:
            ticket = self.sched.submit(
                req.info,
                now,
                self.scenario.gateway.queue_timeout_s,
                exclude=req.tried,
                attempt=req.attempt + 1,
                token=req,
            )
        except (ModelNotFound, NoHealthyBackend, QueueFull):
            # The relay answers the client with this error (or the last backend's).
            self._end(req, now, "failed" if req.failures else "rejected")
            return
        req.ticket = ticket
        if ticket.decision is not None:
            self._bound.append(ticket)
        else:
            self._push(ticket.deadline, _EXPIRE)
            self._bound.extend(self.sched.pump(now))

    def _drain(self, now: float) -> None:
        while self._bound:
            self._dispatch(self._bound.popleft(), now)

    def _dispatch(self, ticket: Ticket, now: float) -> None:
        req = ticket.token
        decision = ticket.decision
        assert isinstance(req, _Req) and decision is not None
        state = self.sched.backends[decision.backend]
        if state.in_flight > state.max_concurrency:
            self.counts["max_in_flight_excess"] += 1
        req.attempt = decision.attempt
        req.dispatched_at = now
        req.first_at = None
        node = self.nodes[decision.backend]
        if node.down:
            self._attempt_failed(req, now, "connect", NO_RESPONSE)
            return
        if node.busy:
            self._attempt_failed(req, now, "http", 503)
            return
        self._node_ids += 1
        req.node_id = self._node_ids
        a = req.arrival
        adm = node.submit(
            req.node_id, a.model, a.prompt_tokens, a.output_tokens, req.engine_prefix, now
        )
        if adm is Admission.BUSY:
            self._attempt_failed(req, now, "http", 503)
        elif adm is Admission.NOT_FOUND:
            self._attempt_failed(req, now, "http", 404)
        elif adm is Admission.REJECTED:
            self._attempt_failed(req, now, "http", 400)
        else:
            self._live[req.node_id] = req

    def _attempt_failed(
        self, req: _Req, now: float, kind: str, status: int, *, streamed: bool = False
    ) -> None:
        ticket = req.ticket
        assert ticket is not None and ticket.decision is not None
        backend = ticket.decision.backend
        verdict = classify(status, kind)
        outcome = Outcome(
            ok=False,
            ttft_s=None if req.first_at is None else req.first_at - req.dispatched_at,
            duration_s=now - req.dispatched_at,
            transient=verdict.transient,
            status=status,
        )
        req.ticket = None
        if kind == "connect":
            self.sched.unreachable(backend, now, "connect refused")  # report_unreachable
        breakers = self.sched.breakers
        if status == 503 and isinstance(breakers, BreakerBoard):
            # The relay's cool_down: a fast 503 must not attract more requests.
            until = now + self.scenario.gateway.busy_cooldown_s
            breakers.cooldown(backend, req.info.model, until, "busy", now=now)
        self._bound.extend(self.sched.release(ticket, outcome, now))
        req.failures += 1
        req.tried = req.tried | {backend}
        decision = self.retry.decide(
            verdict, req.attempt, now, streamed=streamed, gone=kind in ("connect", "reset")
        )
        if decision.retry:
            self.counts["retries"] += 1
            self._push(now + decision.delay_s, _RETRY, req)
            return
        self.counts["failed_mid_stream" if streamed else "failed_before_stream"] += 1
        self._end(req, now, "failed", first=req.first_at, backend=backend)

    def _node_events(self, node: SimNode, now: float) -> None:
        for ev in node.advance(now):
            req = self._live.get(ev.req_id) if isinstance(ev.req_id, int) else None
            if req is None or req.ticket is None:
                continue
            if ev.kind is EventKind.FIRST_TOKEN:
                req.first_at = ev.time
                self.sched.charge(req.ticket, float(ev.tokens))
            elif ev.kind is EventKind.DONE:
                del self._live[req.node_id]
                self._completed(req, node, ev.time, ev)

    def _completed(self, req: _Req, node: SimNode, now: float, ev: Any) -> None:
        ticket = req.ticket
        assert ticket is not None
        first = req.first_at if req.first_at is not None else now
        m = ev.metrics
        outcome = Outcome(
            ok=True,
            ttft_s=first - req.dispatched_at,
            duration_s=now - req.dispatched_at,
            load_s=m.load_duration if m is not None and node.kind == "ollama" else None,
            prompt_tokens=req.arrival.prompt_tokens,
            output_tokens=ev.tokens,
        )
        req.ticket = None
        self._bound.extend(self.sched.release(ticket, outcome, now))
        state = self.sched.backends[node.name]
        if node.kind == "ollama" and not hasattr(self.sched, "set_loaded"):
            # What the gateway assumes between probes: it answered, so it is resident.
            state.loaded[req.info.model] = now + self.scenario.gateway.keep_alive_s
        cached = m.cached_tokens if m is not None else 0
        self._end(req, now, "ok", first=first, backend=node.name, cached=cached)

    def _end(
        self,
        req: _Req,
        now: float,
        status: Status,
        *,
        first: float | None = None,
        backend: str | None = None,
        cached: int = 0,
        queued: bool = False,
    ) -> None:
        assert not req.done, "a request ended twice"
        req.done = True
        self._open -= 1
        a = req.arrival
        if req.attempt:
            queued_s: float | None = req.dispatched_at - a.t
        else:
            queued_s = now - a.t if queued else None
        self.collector.add(
            RequestRecord(
                t=a.t,
                tenant=a.tenant,
                weight=a.weight,
                model=a.model,
                backend=backend,
                queued_s=queued_s,
                ttft_s=None if first is None else first - a.t,
                e2e_s=now - a.t if status == "ok" else None,
                prompt_tokens=a.prompt_tokens,
                output_tokens=a.output_tokens if status == "ok" else 0,
                status=status,
                prefix_hit_tokens=cached,
            )
        )

    # -- probes and faults ----------------------------------------------------------

    def _probe(self, now: float) -> None:
        sched = self.sched
        for name, node in self.nodes.items():
            refresh(sched, name, node.probe(now), now)
        loads = [float(s.in_flight) for s in sched.backends.values() if s.healthy]
        if loads and sum(loads) > 0:
            mean = statistics.fmean(loads)
            self._cv_samples.append(statistics.pstdev(loads) / mean)
        self._bound.extend(sched.pump(now))

    def _fault_start(self, fault: Any, now: float) -> None:
        node = self.nodes[fault.node]
        if fault.kind == "busy":
            node.busy = True
            return
        for node_id in node.fail(now):
            req = self._live.pop(node_id, None)
            if req is not None and req.ticket is not None:
                streamed = req.first_at is not None
                self._attempt_failed(req, now, "reset", NO_RESPONSE, streamed=streamed)

    def _fault_end(self, fault: Any, now: float) -> None:
        node = self.nodes[fault.node]
        if fault.kind == "busy":
            node.busy = False
        else:
            node.recover(now)

    # -- the result -----------------------------------------------------------------

    def _finish(self) -> Run:
        sc = self.scenario
        bound = engine_prefix_bound(sc, self.arrivals)
        loads = sum(n.model_loads for n in self.nodes.values())
        result = self.collector.result(
            model_loads=loads, prefix_hit_bound=bound, backends=list(self.nodes)
        )
        extras: dict[str, Any] = dict(self.counts)
        extras["arrivals"] = len(self.arrivals)
        extras["inflight_cv"] = statistics.fmean(self._cv_samples) if self._cv_samples else None
        extras["virtual_s"] = self.now
        return Run(result, self.collector.records, extras)


def simulate(scenario: Scenario, policy: str, arrivals: list[Arrival], *, seed: int) -> Run:
    """Run ``policy`` over ``arrivals`` on the scenario's fleet."""
    return Simulation(scenario, policy, arrivals, seed=seed).run()
