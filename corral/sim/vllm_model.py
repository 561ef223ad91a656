"""The behaviour of one vLLM server (V1 engine), as a pure event model.

Same contract as :class:`~corral.sim.model.NodeModel`: no I/O, no asyncio, no clock
reads; every call takes ``now`` and the same seed and calls give the same events. One
model is served and always resident. What it reproduces (vLLM's ``v1/core/sched``):

* an engine loop of *steps*; each step first advances the running sequences in batch
  order (a decode is one token, a prefill a chunk), then admits waiting ones FIFO while
  fewer than ``max_num_seqs`` run, all within ``max_num_batched_tokens`` tokens;
* a paged KV cache (:class:`~corral.sim.vllm_kv.BlockPool`): a sequence holds blocks for
  its prompt and generated tokens; a waiting head that does not fit blocks the queue;
  a running sequence that cannot grow preempts the youngest running one (its blocks are
  freed, it goes back to the queue front and is recomputed later), and no one is
  admitted in a step that preempted;
* the prefix cache: at admission the longest chain of cached full prompt blocks is
  reused (at most ``num_tokens - 1`` tokens, as vLLM must recompute the last one), so
  the prefill is shorter; first-time lookups count in ``prefix_queries`` /
  ``prefix_hits`` (tokens), re-lookups after preemption apart;
* step time ``(1 + batch_slowdown * (decodes - 1)) / gen_tps + prefill / prompt_tps``.

For speed in virtual time a run of identical decode-only steps (nothing to admit, no
block shortage, nobody finishing) is taken as one stretch and split only when a call
lands inside it, so thousands of requests simulate in well under a second.

Usage by a driver::

    m = VllmModel(spec, VllmConfig(max_num_seqs=8))
    m.submit(Request(1, spec.name, Kind.CHAT, prompt_tokens=500, output_tokens=80), now)
    while (t := m.next_event_time()) is not None:
        for ev in m.advance(t): ...
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

from corral.sim.catalogue import ModelSpec
from corral.sim.model_types import (
    Admission,
    Event,
    EventKind,
    Kind,
    Metrics,
    ReqId,
    Request,
    VllmConfig,
    VllmStats,
)
from corral.sim.vllm_kv import BlockPool, chain_hashes, token_block_hashes

__all__ = ["VllmModel"]

_EPS_T = 1e-9


@dataclass(eq=False, slots=True)
class _Seq:
    req: Request
    hashes: tuple[int, ...]  # chained hashes of the full prompt blocks
    prompt: int
    target: int  # tokens to generate (0: an embedding, done when its prompt is)
    submitted: float
    computed: int = 0  # tokens whose KV is in the cache
    generated: int = 0
    blocks: list[int] = field(default_factory=list)
    cached: int = 0  # prompt tokens hit at the first admission
    admitted: float | None = None
    first_token: float | None = None
    reported: int = 0
    named: int = 0  # leading blocks already offered to the prefix cache
    preemptions: int = 0
    done: bool = False

    @property
    def num_tokens(self) -> int:
        return self.prompt + self.generated

    @property
    def decoding(self) -> bool:
        return self.generated > 0 and self.computed == self.num_tokens - 1


@dataclass(eq=False, slots=True)
class _Step:
    """Engine work in flight: ``count`` identical steps of ``dur`` from ``start``."""

    start: float
    dur: float
    count: int
    batch: list[tuple[_Seq, int]]  # (sequence, tokens per step)

    @property
    def end(self) -> float:
        return self.start + self.dur * self.count


class VllmModel:
    """One vLLM server. See the module docstring for the rules it follows."""

    def __init__(self, spec: ModelSpec, config: VllmConfig | None = None) -> None:
        self.spec = spec
        self.config = c = config or VllmConfig()
        self.max_model_len = c.max_model_len or spec.context_length
        num_blocks = c.kv_cache_tokens // c.block_size
        if num_blocks * c.block_size < self.max_model_len:
            # vLLM refuses to start in this case, for the same reason: a sequence of
            # max_model_len tokens could never be scheduled.
            raise ValueError(
                f"max_model_len {self.max_model_len} is larger than the {num_blocks * c.block_size}"
                " tokens the KV cache can hold"
            )
        self.pool = BlockPool(num_blocks, c.block_size)
        self.stats = VllmStats()
        rng = random.Random(c.seed)
        jitter = 1.0 + rng.uniform(-c.jitter, c.jitter) if c.jitter > 0 else 1.0
        self._gen_tps = spec.gen_tps * jitter
        self._prompt_tps = spec.prompt_tps * jitter
        self._slowdown = 1.0
        self._clock = -math.inf
        self._running: list[_Seq] = []
        self._waiting: deque[_Seq] = deque()
        self._seqs: dict[ReqId, _Seq] = {}
        self._step: _Step | None = None
        self._plan_at: float | None = None  # the engine loop looks at its queues then
        self._outbox: list[Event] = []

    # ------------------------------------------------------------------ queries
    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_cache_usage(self) -> float:
        return self.pool.usage

    @property
    def in_flight(self) -> int:
        return len(self._seqs)

    def next_event_time(self) -> float | None:
        if self._outbox:
            return self._outbox[0].time
        if self._step is not None:
            return self._step.end
        return self._plan_at

    # ------------------------------------------------------------------- inputs
    def submit(self, req: Request, now: float) -> Admission:
        """Queue a request: it joins the batch at the next step (QUEUED) unless too long."""
        now = self._run_until(now, inclusive=False)
        self.stats.submitted += 1
        target = 0 if req.kind is Kind.EMBED else max(0, req.output_tokens)
        # vLLM: a generation needs room for one token past its prompt; pooling does not.
        room = 0 if req.kind is Kind.EMBED else max(target, 1)
        if req.prompt_tokens < 1 or req.prompt_tokens + room > self.max_model_len:
            self.stats.rejected += 1
            return Admission.REJECTED
        seq = _Seq(req, self._hashes(req), req.prompt_tokens, target, now)
        self._seqs[req.req_id] = seq
        self._waiting.append(seq)
        if self._step is None:
            if self._plan_at is None:
                self._plan_at = now
        else:
            self._interrupt()
        return Admission.QUEUED

    def cancel(self, req_id: ReqId, now: float) -> bool:
        """The client went away: drop the sequence and free its blocks at once."""
        now = self._run_until(now, inclusive=False)
        seq = self._seqs.pop(req_id, None)
        if seq is None:
            return False
        seq.done = True
        self.stats.cancelled += 1
        if seq in self._running:
            self._running.remove(seq)
        else:
            self._waiting.remove(seq)
        self.pool.free(seq.blocks)
        seq.blocks = []
        if self._step is not None:
            self._interrupt()
        return True

    def advance(self, now: float) -> list[Event]:
        """Run the engine up to ``now``; returns the events that happened, in order."""
        self._run_until(now)
        out, self._outbox = self._outbox, []
        return out

    def set_slowdown(self, factor: float, now: float) -> None:
        """A fault multiplier on durations, taking effect from the next step."""
        self._run_until(now, inclusive=False)
        self._slowdown = max(factor, 0.0)
        if self._step is not None:
            self._interrupt()

    def reset_prefix_cache(self, now: float) -> int:
        self._run_until(now)
        return self.pool.reset_cache()

    # ------------------------------------------------------------------ engine
    @property
    def _scale(self) -> float:
        if self.config.zero_delay:
            return 0.0
        return self._slowdown / max(self.config.speed, 1e-9)

    def _hashes(self, req: Request) -> tuple[int, ...]:
        full = req.prompt_tokens // self.config.block_size
        if req.prefix_hashes:
            return chain_hashes(req.prefix_hashes[:full])
        if req.prompt_ids:
            return token_block_hashes(
                req.prompt_ids[: full * self.config.block_size], self.config.block_size
            )
        return ()

    def _interrupt(self) -> None:
        """Something changed mid-stretch: finish only the step under way, then re-plan."""
        step = self._step
        if step is not None and step.count > 1:
            step.count = 1

    def _run_until(self, now: float, inclusive: bool = True) -> float:
        """Run steps that end by ``now``. A step is planned when the previous one ends;
        with ``inclusive`` False a plan due exactly at ``now`` waits, so requests
        submitted at that instant join it."""
        now = max(now, self._clock)
        while True:
            if self._step is not None and self._step.end <= now + _EPS_T:
                ending, self._step = self._step, None
                self._clock = max(self._clock, ending.end)
                self._finish(ending)
                self._plan_at = ending.end
            elif self._plan_at is not None and (
                self._plan_at < now - _EPS_T or (inclusive and self._plan_at <= now + _EPS_T)
            ):
                at, self._plan_at = self._plan_at, None
                self._schedule(at)
            else:
                break
        step = self._step
        if step is not None and step.count > 1 and step.dur > 0:
            # Whole steps of a stretch that lie before `now`: pure bookkeeping (a stretch
            # is cut so that nothing reportable happens inside it).
            done = min(step.count - 1, int((now - step.start) / step.dur + _EPS_T))
            if done > 0:
                self._apply_decodes(step, done)
                step.start += done * step.dur
                step.count -= done
        self._clock = now
        return now

    def _schedule(self, t: float) -> None:
        """Plan the next step (or stretch of steps) from time ``t``; None when idle."""
        self._step = None
        c, pool = self.config, self.pool
        budget = c.max_num_batched_tokens
        batch: list[tuple[_Seq, int]] = []
        preempted = False
        decodes = prefill = 0
        i = 0
        while i < len(self._running) and budget > 0:
            seq = self._running[i]
            n = min(seq.prompt + seq.generated - seq.computed, budget)
            need = pool.blocks_for(seq.computed + n) - len(seq.blocks)
            if need > 0:
                victim: _Seq | None = None
                while need > pool.free_blocks and victim is not seq:
                    # The youngest running sequence gives its blocks back (maybe seq).
                    victim = self._running.pop()
                    self._preempt(victim, t)
                    preempted = True
                if victim is seq:
                    break
                seq.blocks += self._allocate(need)
            if seq.decoding:
                decodes += 1
            else:
                prefill += n
            batch.append((seq, n))
            budget -= n
            i += 1
        if not preempted:
            while self._waiting and len(self._running) < c.max_num_seqs and budget > 0:
                n = self._admit(self._waiting[0], budget, t)
                if n == 0:
                    break
                seq = self._waiting.popleft()
                self._running.append(seq)
                if seq.decoding:
                    decodes += 1
                else:
                    prefill += n
                batch.append((seq, n))
                budget -= n
        if not batch:
            return
        self.stats.steps += 1
        dur = (1.0 + c.batch_slowdown * max(0, decodes - 1)) / self._gen_tps
        dur = (dur + prefill / self._prompt_tps) * self._scale
        count = 1
        if prefill == 0 and not preempted and not self._can_admit(budget):
            count = self._stretch(batch)
        self._step = _Step(t, dur, count, batch)

    def _admit(self, seq: _Seq, budget: int, t: float) -> int:
        """Give the waiting head its cached blocks and new ones; tokens to compute (0: no)."""
        pool = self.pool
        hit: list[int] = []
        if self.config.enable_prefix_caching and seq.target > 0:
            hit = pool.longest_hit(seq.hashes, (seq.num_tokens - 1) // pool.block_size)
        hit_tokens = len(hit) * pool.block_size
        n = min(seq.num_tokens - hit_tokens, budget)
        need = pool.blocks_for(hit_tokens + n) - len(hit)
        if need > pool.available_with(hit):
            return 0
        pool.take(hit)
        seq.blocks = hit + self._allocate(need)
        seq.computed = hit_tokens
        if seq.target > 0:  # pooling requests skip the prefix cache, as in vLLM
            if seq.preemptions:
                self.stats.preempted_queries += seq.num_tokens
                self.stats.preempted_hits += hit_tokens
            else:
                self.stats.prefix_queries += seq.num_tokens
                self.stats.prefix_hits += hit_tokens
        if seq.admitted is None:
            seq.admitted = t
            seq.cached = hit_tokens
        return n

    def _can_admit(self, budget: int) -> bool:
        """Would the next step admit the waiting head? (No side effects.)"""
        if not self._waiting or len(self._running) >= self.config.max_num_seqs or budget <= 0:
            return False
        seq, pool = self._waiting[0], self.pool
        hit: list[int] = []
        if self.config.enable_prefix_caching and seq.target > 0:
            hit = pool.longest_hit(seq.hashes, (seq.num_tokens - 1) // pool.block_size)
        hit_tokens = len(hit) * pool.block_size
        n = min(seq.num_tokens - hit_tokens, budget)
        return pool.blocks_for(hit_tokens + n) - len(hit) <= pool.available_with(hit)

    def _stretch(self, batch: list[tuple[_Seq, int]]) -> int:
        """How many identical decode steps can run before anything reportable happens."""
        chunk = self.config.token_chunk
        limit = min(seq.target - seq.generated for seq, _ in batch)
        if chunk > 0:
            limit = min(limit, min(seq.reported + chunk - seq.generated for seq, _ in batch))
        if limit <= 1:
            return 1
        pool = self.pool

        def shortfall(k: int) -> bool:
            # Blocks still to allocate for k steps beyond those held for the first one.
            need = sum(max(0, pool.blocks_for(s.computed + k) - len(s.blocks)) for s, _ in batch)
            return need > pool.free_blocks

        lo, hi = 1, limit  # lo always fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if shortfall(mid):
                hi = mid - 1
            else:
                lo = mid
        return lo

    def _allocate(self, n: int) -> list[int]:
        before = self.pool.evictions
        blocks = self.pool.allocate(n)
        self.stats.evicted_blocks += self.pool.evictions - before
        return blocks

    def _apply_decodes(self, step: _Step, count: int) -> None:
        """Advance a stretch by ``count`` whole steps and hold blocks for the next one."""
        pool = self.pool
        for seq, _ in step.batch:
            if seq.done:
                continue
            seq.computed += count
            seq.generated += count
            self.stats.generation_tokens += count
            need = pool.blocks_for(seq.computed + 1) - len(seq.blocks)
            if need > 0:
                seq.blocks += self._allocate(need)
        self.stats.steps += count

    def _finish(self, step: _Step) -> None:
        """The last step of ``step`` ends: tokens are sampled, events emitted."""
        t = step.end
        if step.count > 1:
            self._apply_decodes(step, step.count - 1)
        finished: list[_Seq] = []
        for seq, n in step.batch:
            if seq.done:
                continue
            seq.computed += n
            if seq.named < len(seq.hashes):
                self._cache_prompt_blocks(seq)
            if seq.computed < seq.num_tokens:
                continue  # a prefill chunk: no token yet
            if seq.target == 0:
                finished.append(seq)
                continue
            seq.generated += 1
            self.stats.generation_tokens += 1
            if seq.first_token is None:
                seq.first_token = t
                self.stats.prompt_tokens += seq.prompt
            chunk = self.config.token_chunk
            if seq.generated >= seq.target:
                finished.append(seq)
                if seq.reported == 0:
                    self._emit(t, EventKind.FIRST_TOKEN, seq, seq.generated)
            elif seq.reported == 0 or (chunk > 0 and seq.generated >= seq.reported + chunk):
                kind = EventKind.FIRST_TOKEN if seq.reported == 0 else EventKind.TOKENS
                self._emit(t, kind, seq, seq.generated)
        for seq in finished:
            self._complete(seq, t)

    def _cache_prompt_blocks(self, seq: _Seq) -> None:
        if not self.config.enable_prefix_caching or seq.target == 0:
            return
        full = min(len(seq.hashes), seq.computed // self.pool.block_size, len(seq.blocks))
        for j in range(seq.named, full):
            self.pool.cache(seq.blocks[j], seq.hashes[j])
        seq.named = max(seq.named, full)

    def _preempt(self, seq: _Seq, t: float) -> None:
        self.pool.free(seq.blocks)
        seq.blocks = []
        seq.computed = 0
        seq.named = 0
        seq.preemptions += 1
        self.stats.preemptions += 1
        self._waiting.appendleft(seq)
        self._emit(t, EventKind.PREEMPTED, seq, seq.generated)

    def _complete(self, seq: _Seq, t: float) -> None:
        self._running.remove(seq)
        self._seqs.pop(seq.req.req_id, None)
        seq.done = True
        self.pool.free(seq.blocks)
        seq.blocks = []
        self.stats.completed += 1
        if seq.target == 0:
            self.stats.prompt_tokens += seq.prompt
        admitted = seq.admitted if seq.admitted is not None else t
        first = seq.first_token if seq.first_token is not None else t
        metrics = Metrics(
            total_duration=t - seq.submitted,
            load_duration=admitted - seq.submitted,  # time in the waiting queue
            prompt_eval_count=seq.prompt,
            prompt_eval_duration=first - admitted,
            eval_count=seq.generated,
            eval_duration=t - first,
            cached_tokens=seq.cached,
        )
        reason = seq.req.done_reason or "stop"
        self._emit(t, EventKind.DONE, seq, seq.generated, metrics, reason)

    def _emit(
        self,
        t: float,
        kind: EventKind,
        seq: _Seq,
        tokens: int,
        metrics: Metrics | None = None,
        reason: str = "",
    ) -> None:
        if kind is not EventKind.PREEMPTED and kind is not EventKind.DONE:
            seq.reported = tokens
        self._outbox.append(Event(t, kind, self.spec.name, seq.req.req_id, tokens, metrics, reason))
