"""The behaviour of one Ollama node, as a pure event model.

No I/O, no asyncio, no clock reads: every call takes ``now`` (float seconds on any
monotonic time line) so the same model runs behind real sockets (``corral sim``) and in
virtual time inside the fleet benchmark. Given the same seed and the same calls it
produces the same events.

What it reproduces (see Ollama's ``server/sched.go``):

* models present on disk vs. loaded runners; a runner has ``num_parallel`` slots
  (embedding models always 1) and requests for a resident model queue on its slots
  without limit;
* requests that need a load go through ONE scheduler queue, processed head first, one
  load at a time; ``max_queue`` caps only that queue (then ``BUSY``, Ollama's 503);
* a load fits when both ``max_loaded_models`` and the VRAM budget allow it, otherwise
  the scheduler evicts: the idle runner with the shortest keep-alive (ties by name), or
  if none is idle the shortest-keep-alive busy one, which unloads once it drains;
* keep-alive: per-request override, 0 unloads when idle, ``inf`` never expires;
* a different ``num_ctx`` from the loaded one forces a reload;
* prompt eval then generation, at per-request rates that shrink as requests share a
  runner (aggregate throughput ~ n ** ``concurrency_exponent``).

Usage by a driver::

    adm = node.submit(Request(req_id=1, model="llama3.2:1b", prompt_tokens=20,
                              output_tokens=50), now)
    while (t := node.next_event_time()) is not None:
        for ev in node.advance(t): ...

The prefix cache (for the vLLM simulator, later) plugs in through :class:`PrefixCache`:
it decides how many prompt tokens are already cached when a request takes its slot.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from corral.sim.catalogue import ModelSpec, normalize_name
from corral.sim.model_types import (
    FOREVER,
    Admission,
    Event,
    EventKind,
    Kind,
    Metrics,
    NodeConfig,
    NodeStats,
    NoPrefixCache,
    PrefixCache,
    ReqId,
    Request,
    RunnerInfo,
)

__all__ = [
    "FOREVER",
    "Admission",
    "Event",
    "EventKind",
    "Kind",
    "Metrics",
    "NoPrefixCache",
    "NodeConfig",
    "NodeModel",
    "NodeStats",
    "PrefixCache",
    "ReqId",
    "Request",
    "RunnerInfo",
]

_EPS_T = 1e-9  # seconds: events this close to `now` are due
_EPS_TOK = 1e-4  # tokens: float drift tolerance of the fluid progress model


@dataclass(eq=False, slots=True)
class _Job:
    req: Request
    spec: ModelSpec  # taken at submit: a later `ollama rm` does not strand the job
    submitted: float
    cancelled: bool = False
    runner: _Runner | None = None
    usable_at: float | None = None  # when its runner was ready for it
    started: float = 0.0
    prompt_count: int = 0
    prompt_left: float = 0.0
    prompt_end: float | None = None
    gen_done: float = 0.0
    reported: int = 0
    p_rate: float = 1.0
    g_rate: float = 1.0
    next_at: float = math.inf  # when it reaches its next reported token count


@dataclass(eq=False, slots=True)
class _Runner:
    spec: ModelSpec
    num_ctx: int
    slots: int
    size: int
    size_vram: int
    session: float
    state: str = "loading"  # loading | ready | unloading
    ready_at: float = 0.0
    unload_at: float = 0.0
    expires_at: float | None = None  # set only while idle with a timer
    evicting: bool = False
    refs: int = 0
    last: float = 0.0
    next_at: float | None = None
    active: list[_Job] = field(default_factory=list)
    waiting: deque[_Job] = field(default_factory=deque)


class NodeModel:
    """One Ollama node. See the module docstring for the rules it follows."""

    def __init__(
        self,
        config: NodeConfig | None = None,
        models: Iterable[ModelSpec] = (),
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.config = config or NodeConfig()
        self.stats = NodeStats()
        self._cache: PrefixCache = prefix_cache or NoPrefixCache()
        self._rng = random.Random(self.config.seed)
        self._present: dict[str, ModelSpec] = {}
        for spec in models:
            self.add_model(spec)
        self._slowdown = 1.0
        self._scale = self._compute_scale()
        self._clock = -math.inf
        self._runners: dict[str, _Runner] = {}
        self._unloading: list[_Runner] = []
        self._loading: _Runner | None = None
        self._blocked_on: _Runner | None = None  # eviction the scheduler waits for
        self._current: _Job | None = None  # head of the scheduler queue, being placed
        self._pending: deque[_Job] = deque()
        self._jobs: dict[ReqId, _Job] = {}
        self._outbox: list[Event] = []

    # ----------------------------------------------------------------- presence
    def add_model(self, spec: ModelSpec) -> None:
        self._present[normalize_name(spec.name)] = spec

    def remove_model(self, name: str) -> bool:
        # Like `ollama rm`, deleting files does not stop a running runner.
        return self._present.pop(normalize_name(name), None) is not None

    def has_model(self, name: str) -> bool:
        return normalize_name(name) in self._present

    def spec(self, name: str) -> ModelSpec | None:
        return self._present.get(normalize_name(name))

    def present(self) -> list[ModelSpec]:
        return list(self._present.values())

    # ------------------------------------------------------------------ queries
    @property
    def time_scale(self) -> float:
        """Multiplier on work durations now: 0 in zero-delay mode, else slowdown / speed."""
        return self._scale

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    @property
    def pending_loads(self) -> int:
        """Requests waiting for a model load (scheduler queue and the load under way)."""
        waiting = sum(1 for j in self._pending if not j.cancelled) + (self._current is not None)
        if self._loading is not None:
            waiting += len(self._loading.waiting)
        return waiting

    def runners(self, now: float) -> list[RunnerInfo]:
        out = []
        for r in self._runners.values():
            if r.expires_at is not None:
                expires = r.expires_at
            else:
                expires = now + r.session if r.session < FOREVER else FOREVER
            out.append(
                RunnerInfo(
                    model=r.spec.name,
                    state=r.state,
                    num_ctx=r.num_ctx,
                    size_bytes=r.size,
                    size_vram=r.size_vram,
                    keep_alive=r.session,
                    expires_at=expires,
                    active=len(r.active),
                    waiting=len(r.waiting),
                )
            )
        return out

    def next_event_time(self) -> float | None:
        if self._outbox:
            return self._outbox[0].time
        return self._next_internal()

    # ------------------------------------------------------------------ inputs
    def submit(self, req: Request, now: float) -> Admission:
        now = self._run_until(now)
        self.stats.submitted += 1
        name = normalize_name(req.model)
        if name not in self._present:
            self.stats.not_found += 1
            return Admission.NOT_FOUND
        if name != req.model:
            req = replace(req, model=name)
        if req.kind is Kind.UNLOAD:
            self._unload_request(name, now)
            self._emit(
                now,
                EventKind.DONE,
                name,
                req.req_id,
                done_reason="unload",
                metrics=Metrics(0.0, 0.0, 0, 0.0, 0, 0.0),
            )
            self.stats.completed += 1
            return Admission.DONE
        job = _Job(req=req, spec=self._present[name], submitted=now)
        runner = self._runners.get(name)
        if runner is not None and not self._needs_reload(runner, req):
            self._jobs[req.req_id] = job
            self._attach(runner, job, now)
            self._reschedule(runner)
            return self._admission_of(job)
        scheduler_idle = (
            self._current is None
            and self._loading is None
            and self._blocked_on is None
            and not self._pending
        )
        if not scheduler_idle and len(self._pending) >= self.config.max_queue:
            self.stats.busy += 1
            return Admission.BUSY
        self._jobs[req.req_id] = job
        self._pending.append(job)
        self._schedule(now)
        return self._admission_of(job)

    def cancel(self, req_id: ReqId, now: float) -> bool:
        """The client went away: free its slot at once. False if unknown or finished."""
        now = self._run_until(now)
        job = self._jobs.pop(req_id, None)
        if job is None:
            return False
        job.cancelled = True
        self.stats.cancelled += 1
        r = job.runner
        if r is None:
            # Still in the scheduler queue: like Ollama, it keeps its place (and counts
            # against max_queue) until the scheduler reaches it and skips it.
            if self._current is job:
                self._current = None
                self._schedule(now)
            return True
        if r is self._loading and r.refs == 1:
            # The only request waiting for this load left: abort the load.
            del self._runners[r.spec.name]
            self._loading = None
            r.refs = 0
            r.waiting.clear()
            self._emit(now, EventKind.UNLOADED, r.spec.name, done_reason="aborted")
            self._schedule(now)
            return True
        self._integrate(r, now)
        if job in r.active:
            r.active.remove(job)
        else:
            r.waiting.remove(job)
        self._fill_slots(r, now)
        self._detach(r, now)
        self._reschedule(r)
        self._schedule(now)
        return True

    def advance(self, now: float) -> list[Event]:
        self._run_until(now)
        out, self._outbox = self._outbox, []
        return out

    def preload(
        self, name: str, now: float, keep_alive: float | None = None, num_ctx: int | None = None
    ) -> None:
        """Make a present model resident at once (a node that was already warm)."""
        now = self._run_until(now)
        spec = self._present[normalize_name(name)]
        req = Request(
            req_id=-1, model=spec.name, kind=Kind.LOAD, keep_alive=keep_alive, num_ctx=num_ctx
        )
        r = self._new_runner(spec, req, now)
        r.state, r.ready_at, r.last = "ready", now, now
        self._runners[spec.name] = r
        self._idle(r, now)

    def set_slowdown(self, factor: float, now: float) -> None:
        """Stretch every later duration by ``factor`` (the ``slow`` fault)."""
        now = self._run_until(now)
        for r in self._runners.values():
            self._integrate(r, now)
        self._slowdown = max(0.0, factor)
        self._scale = self._compute_scale()
        for r in self._runners.values():
            self._reschedule(r)

    # ------------------------------------------------------------- event loop
    def _compute_scale(self) -> float:
        if self.config.zero_delay:
            return 0.0
        return self._slowdown / max(self.config.speed, 1e-9)

    def _emit(
        self,
        t: float,
        kind: EventKind,
        model: str,
        req_id: ReqId | None = None,
        tokens: int = 0,
        metrics: Metrics | None = None,
        done_reason: str = "",
    ) -> None:
        self._outbox.append(Event(t, kind, model, req_id, tokens, metrics, done_reason))

    def _next_internal(self) -> float | None:
        times: list[float] = []
        if self._loading is not None:
            times.append(self._loading.ready_at)
        times.extend(r.unload_at for r in self._unloading)
        for r in self._runners.values():
            if r.next_at is not None:
                times.append(r.next_at)
            if r.expires_at is not None and r.expires_at < FOREVER:
                times.append(r.expires_at)
        return min(times) if times else None

    def _run_until(self, now: float) -> float:
        now = max(now, self._clock)
        while True:
            t = self._next_internal()
            if t is None or t > now + _EPS_T:
                break
            t = max(t, self._clock)
            self._clock = t
            self._step(t)
        self._clock = now
        return now

    def _step(self, t: float) -> None:
        due = t + _EPS_T
        if self._loading is not None and self._loading.ready_at <= due:
            self._finish_load(self._loading, t)
        for r in [u for u in self._unloading if u.unload_at <= due]:
            self._finish_unload(r, t)
        for r in list(self._runners.values()):
            if r.next_at is not None and r.next_at <= due:
                self._progress(r, t)
        for r in list(self._runners.values()):
            if r.expires_at is not None and r.expires_at <= due and r.refs == 0:
                self._start_unload(r, t)

    # -------------------------------------------------------------- scheduler
    def _schedule(self, now: float) -> None:
        """Place the head of the scheduler queue, as Ollama's processPending does."""
        while self._loading is None and self._blocked_on is None:
            job = self._current
            if job is None:
                while self._pending and self._pending[0].cancelled:
                    self._pending.popleft()
                if not self._pending:
                    return
                job = self._current = self._pending.popleft()
            name = job.req.model
            runner = self._runners.get(name)
            if runner is not None:
                if not self._needs_reload(runner, job.req):
                    self._current = None
                    self._attach(runner, job, now)
                    self._reschedule(runner)
                    continue
                victim: _Runner | None = runner
            elif self._fits(job) or (not self._runners and not self._unloading):
                # Nothing resident at all: Ollama loads it anyway (spilling to CPU).
                self._current = None
                self._start_load(job, now)
                return
            elif self._unloading:
                return  # an unload in flight may make room; wait for it
            else:
                victim = self._pick_victim()
            if victim is None:
                return
            victim.evicting = True
            victim.expires_at = None
            self.stats.evictions += 1
            self._blocked_on = victim
            if victim.refs == 0:
                self._start_unload(victim, now)
            return

    def _fits(self, job: _Job) -> bool:
        c = self.config
        resident = list(self._runners.values()) + self._unloading
        if c.max_loaded_models > 0 and len(resident) >= c.max_loaded_models:
            return False
        need = self._runner_bytes(job.spec, self._num_ctx(job.spec, job.req))
        return sum(r.size for r in resident) + need <= c.vram_bytes

    def _pick_victim(self) -> _Runner | None:
        ready = [r for r in self._runners.values() if r.state == "ready"]
        # Shortest keep-alive first, then name; FOREVER sorts last (Go's uint64 cast).
        ready.sort(key=lambda r: (r.session, r.spec.name))
        for r in ready:
            if r.refs == 0:
                return r
        return ready[0] if ready else None

    def _num_ctx(self, spec: ModelSpec, req: Request) -> int:
        want = req.num_ctx if req.num_ctx and req.num_ctx > 0 else self.config.default_num_ctx
        return max(4, min(want, spec.context_length))

    def _needs_reload(self, r: _Runner, req: Request) -> bool:
        # Ollama compares all runner options; num_ctx is the one clients change.
        return r.num_ctx != self._num_ctx(r.spec, req)

    def _runner_bytes(self, spec: ModelSpec, num_ctx: int) -> int:
        slots = 1 if spec.embedding else max(1, self.config.num_parallel)
        return spec.vram_bytes + spec.kv_bytes_per_token * num_ctx * slots

    def _new_runner(self, spec: ModelSpec, req: Request, now: float) -> _Runner:
        num_ctx = self._num_ctx(spec, req)
        size = self._runner_bytes(spec, num_ctx)
        session = self.config.keep_alive if req.keep_alive is None else req.keep_alive
        slots = 1 if spec.embedding else max(1, self.config.num_parallel)
        return _Runner(
            spec=spec,
            num_ctx=num_ctx,
            slots=slots,
            size=size,
            size_vram=min(size, self.config.vram_bytes),
            session=session,
            last=now,
        )

    def _start_load(self, job: _Job, now: float) -> None:
        spec = job.spec
        r = self._new_runner(spec, job.req, now)
        base = self.config.load_base_s + spec.size_bytes / self.config.load_bytes_per_s
        r.ready_at = now + base * self._jitter() * self._scale
        self._runners[spec.name] = r
        self._loading = r
        self.stats.loads += 1
        self._emit(now, EventKind.LOAD_STARTED, spec.name)
        self._attach(r, job, now)

    def _finish_load(self, r: _Runner, t: float) -> None:
        self._loading = None
        r.state, r.last = "ready", t
        self._emit(t, EventKind.LOADED, r.spec.name)
        self._fill_slots(r, t)
        if r.refs == 0:
            self._idle(r, t)
        self._reschedule(r)
        self._schedule(t)

    def _unload_request(self, name: str, now: float) -> None:
        r = self._runners.get(name)
        if r is None:
            return
        r.session = 0.0
        r.expires_at = None
        if r.refs == 0 and r.state == "ready":
            self._start_unload(r, now)

    def _start_unload(self, r: _Runner, now: float) -> None:
        if self._runners.get(r.spec.name) is r:
            del self._runners[r.spec.name]
        r.state = "unloading"
        r.expires_at = None
        r.next_at = None
        r.unload_at = now + self.config.unload_s * self._scale
        self._unloading.append(r)
        self.stats.unloads += 1

    def _finish_unload(self, r: _Runner, t: float) -> None:
        self._unloading.remove(r)
        self._cache.on_unload(r.spec.name)
        self._emit(
            t, EventKind.UNLOADED, r.spec.name, done_reason="evicted" if r.evicting else "expired"
        )
        if self._blocked_on is r:
            self._blocked_on = None
        self._schedule(t)

    # --------------------------------------------------------------- runners
    def _attach(self, r: _Runner, job: _Job, now: float) -> None:
        """Ollama's useLoadedRunner: take a reference, stop the expiry timer."""
        r.refs += 1
        r.expires_at = None
        if job.req.keep_alive is not None:
            r.session = job.req.keep_alive
        job.runner = r
        if r.state == "loading":
            r.waiting.append(job)
            return
        job.usable_at = now
        if job.req.kind is Kind.LOAD:
            self._finish_job(r, job, now, "load")
            self._detach(r, now)
        elif len(r.active) < r.slots:
            self._integrate(r, now)
            self._start_job(r, job, now)
        else:
            r.waiting.append(job)

    def _detach(self, r: _Runner, now: float) -> None:
        r.refs -= 1
        if r.refs == 0:
            self._idle(r, now)

    def _idle(self, r: _Runner, now: float) -> None:
        if r.evicting or r.session <= 0:
            self._start_unload(r, now)
        else:
            r.expires_at = now + r.session

    def _fill_slots(self, r: _Runner, now: float) -> None:
        if r.state != "ready":
            return
        for job in [j for j in r.waiting if j.req.kind is Kind.LOAD]:
            # Load-only requests never wait for a slot.
            r.waiting.remove(job)
            if job.usable_at is None:
                job.usable_at = now
            self._finish_job(r, job, now, "load")
            r.refs -= 1
        while r.waiting and len(r.active) < r.slots:
            job = r.waiting.popleft()
            if job.usable_at is None:
                job.usable_at = now
            self._integrate(r, now)
            self._start_job(r, job, now)

    def _start_job(self, r: _Runner, job: _Job, now: float) -> None:
        req = job.req
        cached = min(self._cache.cached_tokens(r.spec.name, req), req.prompt_tokens)
        job.started = now
        job.prompt_count = min(req.prompt_tokens, r.num_ctx)
        job.prompt_left = float(max(0, job.prompt_count - cached))
        job.prompt_end = None if job.prompt_left > 0 else now
        offload = r.size_vram / r.size if r.size else 1.0
        penalty = 1.0 / (offload + (1.0 - offload) * self.config.cpu_slowdown)
        jitter = self._jitter()
        job.p_rate = r.spec.prompt_tps * penalty * jitter
        job.g_rate = r.spec.gen_tps * penalty * jitter
        r.active.append(job)

    def _jitter(self) -> float:
        j = self.config.jitter
        return 1.0 + self._rng.uniform(-j, j) if j > 0 else 1.0

    def _share(self, n: int) -> float:
        """Per-request speed factor with n requests sharing a runner."""
        return float(n) ** (self.config.concurrency_exponent - 1.0) if n > 1 else 1.0

    def _integrate(self, r: _Runner, t: float) -> None:
        """Move every active request of ``r`` forward from ``r.last`` to ``t``."""
        dt, r.last = t - r.last, max(r.last, t)
        if not r.active:
            return
        if self._scale == 0.0:
            for j in r.active:
                j.prompt_left = 0.0
                j.prompt_end = j.prompt_end if j.prompt_end is not None else t
                j.gen_done = float(self._gen_total(j))
            return
        if dt <= 0:
            return
        share = self._share(len(r.active)) / self._scale
        for j in r.active:
            rem = dt
            if j.prompt_end is None:
                rate = j.p_rate * share
                need = j.prompt_left / rate
                if need <= rem or j.prompt_left <= _EPS_TOK:
                    rem = max(0.0, rem - need)
                    j.prompt_left = 0.0
                    j.prompt_end = t - rem
                else:
                    j.prompt_left -= rem * rate
                    rem = 0.0
            total = self._gen_total(j)
            if rem > 0 and j.gen_done < total:
                j.gen_done = min(float(total), j.gen_done + rem * j.g_rate * share)

    def _gen_total(self, j: _Job) -> int:
        return 0 if j.req.kind is Kind.EMBED else max(0, j.req.output_tokens)

    def _target(self, j: _Job) -> int:
        total = self._gen_total(j)
        if j.reported == 0 and total > 0:
            return 1
        chunk = self.config.token_chunk
        return min(total, j.reported + chunk) if chunk > 0 else total

    def _reschedule(self, r: _Runner) -> None:
        if r.state != "ready" or not r.active:
            r.next_at = None
            return
        if self._scale == 0.0:
            r.next_at = r.last
            for j in r.active:
                j.next_at = r.last
            return
        share = self._share(len(r.active)) / self._scale
        best = math.inf
        for j in r.active:
            tp = j.prompt_left / (j.p_rate * share) if j.prompt_end is None else 0.0
            tg = max(0.0, self._target(j) - j.gen_done) / (j.g_rate * share)
            j.next_at = r.last + tp + tg
            best = min(best, j.next_at)
        r.next_at = best

    def _progress(self, r: _Runner, t: float) -> None:
        self._integrate(r, t)
        finished = []
        for j in r.active:
            total = self._gen_total(j)
            if j.next_at <= t + _EPS_T:
                # Woken for this job: float drift must not leave it a hair short.
                if j.prompt_end is None:
                    j.prompt_left, j.prompt_end = 0.0, t
                j.gen_done = max(j.gen_done, float(self._target(j)))
            count = min(total, int(j.gen_done + _EPS_TOK))
            if j.prompt_end is not None and count >= total:
                if j.reported == 0 and total > 0:
                    self._emit(t, EventKind.FIRST_TOKEN, r.spec.name, j.req.req_id, total)
                j.reported = total
                finished.append(j)
            elif count >= self._target(j) and count > j.reported:
                kind = EventKind.FIRST_TOKEN if j.reported == 0 else EventKind.TOKENS
                j.reported = count
                self._emit(t, kind, r.spec.name, j.req.req_id, count)
        for j in finished:
            r.active.remove(j)
            self._cache.on_prompt_done(r.spec.name, j.req)
            self._finish_job(r, j, t, j.req.done_reason)
        self._fill_slots(r, t)
        for _ in finished:
            self._detach(r, t)
        self._reschedule(r)
        if finished:
            self._schedule(t)

    def _finish_job(self, r: _Runner, j: _Job, t: float, reason: str) -> None:
        self._jobs.pop(j.req.req_id, None)
        self.stats.completed += 1
        usable = j.usable_at if j.usable_at is not None else t
        if j.req.kind is Kind.LOAD:
            m = Metrics(t - j.submitted, usable - j.submitted, 0, 0.0, 0, 0.0)
        else:
            prompt_end = j.prompt_end if j.prompt_end is not None else t
            m = Metrics(
                total_duration=t - j.submitted,
                load_duration=usable - j.submitted,
                prompt_eval_count=j.prompt_count,
                prompt_eval_duration=prompt_end - j.started,
                eval_count=self._gen_total(j),
                eval_duration=t - prompt_end,
            )
        self._emit(t, EventKind.DONE, r.spec.name, j.req.req_id, self._gen_total(j), m, reason)

    def _admission_of(self, job: _Job) -> Admission:
        r = job.runner
        if r is None:
            return Admission.LOADING
        if job.req.req_id not in self._jobs:
            return Admission.DONE
        if r.state == "loading":
            return Admission.LOADING
        return Admission.RUNNING if job in r.active else Admission.QUEUED
