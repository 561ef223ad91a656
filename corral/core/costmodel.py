"""The ``corral`` policy: route to the lowest estimated time to first token.

On a mixed Ollama/vLLM fleet the cost that dominates is a model load (seconds to
minutes), then queueing behind busy slots, then prefill. So each candidate's TTFT
is estimated from what the gateway knows and learns:

* **wait** for a slot when none is free: a slot frees about every ``service`` /
  (busy + 1) seconds (the first of n residual service times), and requests this
  policy already told to wait for the same backend are ahead in line;
* **prefill**: prompt tokens / ``prefill_tps``, stretched by how busy the node is
  (parallel slots share one GPU), less the blocks an affine backend has cached;
* **load** when the model is not resident (``/api/ps``, the vLLM model list, or a
  request of ours that ended well since the last probe): the EWMA of the
  ``load_duration`` the backend reported, else ``load_base_s + size /
  load_bytes_per_s``; a load already under way counts only its remainder, and
  Ollama loads one model at a time, so another model's load goes first;
* **eviction**: a load that does not fit (``max_loaded_models`` resident, and VRAM
  from ``vram_bytes`` at ``memory_factor`` x the size on disk) evicts; a busy victim
  delays the load until it drains, and a recently used one must be reloaded by its
  next request: a full load when this was its only copy, ``evict_weight`` of one
  when another node has it too (see :mod:`corral.core.loadcost`);
* **engine queue** (vLLM, from its metrics): requests waiting in the engine and KV
  cache use above ``kv_high`` (preemptions ahead);
* **failures**: a request fails with probability 1 - s (s: the success EWMA,
  recovering while there is no news) and is retried elsewhere; failures show
  early (refused, 503, cut), so each try costs about ``failure_cost_s``, not a
  whole estimate: est + (1 - s) / s x failure_cost_s.

The minimum wins, busy candidates included: returning a busy backend means "wait
for it" (the scheduler keeps the request queued). One rule is absolute: a free
node that must load the model is never chosen while a free node has it resident.
Prefix/session affinity (:mod:`corral.core.affinity`, bounded by load) is honoured
while the affine backend's estimate, less the prefill of its cached blocks, is
within ``affinity_slack_s`` of the best.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from corral.core.affinity import Affinity
from corral.core.loadcost import LoadCost
from corral.core.policy_base import Hooks, ModelStats, RouteStats, one_line
from corral.core.scoring import recovered_success
from corral.core.types import BackendState, EngineSignals, Outcome, RequestInfo
from corral.core.waitline import WaitLine

__all__ = ["CorralPolicy"]

_PREFILL_OVERHEAD_S = 0.02  # tokenisation, scheduling, first decode step


class CorralPolicy(Hooks):
    """Lowest estimated time to first token; loads, evictions and queues priced in."""

    name = "corral"

    def __init__(
        self,
        *,
        load_base_s: float = 1.0,
        load_bytes_per_s: float = 0.5e9,
        default_model_bytes: float = 4e9,
        max_loaded_models: int = 3,
        memory_factor: float = 1.4,
        default_service_s: float = 4.0,
        prefill_tps: float = 2000.0,
        contention: float = 1.0,
        evict_weight: float = 0.5,
        recent_s: float = 120.0,
        failure_cost_s: float = 2.0,
        recovery_s: float = 30.0,
        kv_high: float = 0.8,
        kv_weight_s: float = 2.0,
        engine_waiting_s: float = 0.1,
        warm_ttl_s: float = 240.0,
        affinity_slack_s: float = 0.2,
        ewma_alpha: float = 0.3,
        prefix_affinity: bool = True,
        session_affinity: bool = True,
        affinity_abs: float = 2.0,
        affinity_rel: float = 1.5,
        prefix_memory: int = 50_000,
        min_prefix_blocks: int = 1,
        session_prefix_blocks: int = 4,
        max_sessions: int = 100_000,
    ) -> None:
        for key in ("load_bytes_per_s", "default_service_s", "prefill_tps", "recovery_s"):
            if not locals()[key] > 0:
                raise ValueError(f"{key} must be > 0, not {locals()[key]}")
        if not 0.0 <= kv_high < 1.0 or max_loaded_models < 1:
            raise ValueError("kv_high must be in [0, 1) and max_loaded_models >= 1")
        self.default_service_s = default_service_s
        self.prefill_tps = prefill_tps
        self.contention = contention
        self.failure_cost_s = failure_cost_s
        self.recovery_s = recovery_s
        self.kv_high = kv_high
        self.kv_weight_s = kv_weight_s
        self.engine_waiting_s = engine_waiting_s
        self.warm_ttl_s = warm_ttl_s
        self.affinity_slack_s = affinity_slack_s
        self.stats = RouteStats(ewma_alpha)
        # backend -> (when its engine signals were read, our in-flight count then)
        self._signals_seen: dict[str, tuple[float, int]] = {}
        self.affinity: Affinity | None = None
        if prefix_affinity or session_affinity:
            self.affinity = Affinity(
                prefix_affinity=prefix_affinity,
                session_affinity=session_affinity,
                affinity_abs=affinity_abs,
                affinity_rel=affinity_rel,
                prefix_memory=prefix_memory,
                min_prefix_blocks=min_prefix_blocks,
                session_prefix_blocks=session_prefix_blocks,
                max_sessions=max_sessions,
                load=self._load,
                hit_worth=self._hit_worth,
            )
        self.loads = LoadCost(
            self.stats,
            load_base_s=load_base_s,
            load_bytes_per_s=load_bytes_per_s,
            default_model_bytes=default_model_bytes,
            max_loaded_models=max_loaded_models,
            evict_weight=evict_weight,
            recent_s=recent_s,
            default_service_s=default_service_s,
            memory_factor=memory_factor,
        )
        self.line = WaitLine()  # who waits for which busy backend; the queue's depth

    # -- the decision -------------------------------------------------------------

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str]:
        # Tens to hundreds of candidates per decision, in the gateway's event loop:
        # the common case (resident, free, no engine metrics, no failures) is priced
        # inline with local lookups; anything else goes through _estimate.
        model = info.model
        by_name = self.stats.by_model.get(model)
        stats_of = by_name.get if by_name else None
        use_affinity = self.affinity is not None and (bool(info.prefix) or info.session is not None)
        key: object = info.request_id or id(info)
        line = self.line
        depth = line.queue_depth
        if depth is not None and depth(model) > 1:
            line.measure(candidates, model, now)
        else:
            line.line_share = 0.0
        best: BackendState | None = None
        best_est = second_est = math.inf
        second: BackendState | None = None
        best_plain = second_plain = False  # priced by the common case (cheap to explain)
        warm: BackendState | None = None  # best free candidate with the model resident
        warm_est = math.inf
        ests: dict[str, float] = {}
        cold: list[tuple[BackendState, ModelStats | None, bool]] = []
        loads = self.loads
        leaving = loads.leaving if loads.any_leaving else None
        left = loads.left
        warm_ttl = self.warm_ttl_s
        base = _PREFILL_OVERHEAD_S + info.prompt_tokens / self.prefill_tps
        contention = self.contention
        for b in candidates:
            st = stats_of(b.name) if stats_of is not None else None
            busy = b.in_flight
            slots = b.max_concurrency
            cap = b.max_per_model
            by_model = b.in_flight_by_model
            free = busy < slots and (cap is None or by_model.get(model, 0) < cap)
            # _resident, inlined
            if b.kind == "openai":
                resident = True
            elif leaving is not None and leaving(b, model):
                resident = False
            elif b.loaded.get(model, -1.0) > now:
                resident = True
            elif by_model.get(model):
                resident = left(b.name, model, now) is None
            elif st is not None and now - st.last_ok < warm_ttl:
                checked = b.last_check_at
                resident = checked is None or st.last_ok >= checked
            else:
                resident = False
            if not resident:
                # Priced after the resident ones: by then the bar is known and most
                # cold candidates are out of the running before evictions are priced.
                cold.append((b, st, free))
                continue
            plain = free and b.signals is None and (st is None or st.success >= 1.0)
            if plain:
                est = base * (1.0 + contention * busy / slots)  # _estimate's prefill term
            else:
                est = self._estimate(b, info, now, st, True, free, key, math.inf, None)
            if use_affinity:
                ests[b.name] = est
            if est < best_est:
                second, second_est, second_plain = best, best_est, best_plain
                best, best_est, best_plain = b, est, plain
            elif est < second_est:
                second, second_est, second_plain = b, est, plain
            if free and est < warm_est:
                warm, warm_est = b, est
        for b, st, free in cold:
            # A load alone (none under way) already puts it out of the top two.
            if loads.load_time(b, model, st) >= second_est and left(b.name, model, now) is None:
                continue
            est = self._estimate(b, info, now, st, False, free, key, second_est, None)
            if use_affinity:
                ests[b.name] = est
            if est < best_est:
                second, second_est, second_plain = best, best_est, best_plain
                best, best_est, best_plain = b, est, False
            elif est < second_est:
                second, second_est, second_plain = b, est, False
        assert best is not None
        chosen, chosen_est, chosen_plain, why = best, best_est, best_plain, ""
        if use_affinity:
            assert self.affinity is not None
            hit = self.affinity.choose(candidates, info)
            if hit is not None and hit[0] is not best:
                pref, what, depth_ = hit
                # Its cached blocks need no prefill: price that, plus a little slack
                # so a conversation does not hop for a hair's difference.
                saved = (
                    self._prefill(pref, info.prompt_tokens * depth_ / len(info.prefix))
                    if depth_
                    else 0.0
                )
                pref_est = ests.get(pref.name, math.inf) - saved
                if pref_est <= best_est + self.affinity_slack_s:
                    chosen, chosen_est, chosen_plain, why = pref, pref_est, False, what
            elif hit is not None:
                why = hit[1]
        if (
            warm is not None
            and chosen is not warm
            and chosen.has_slot(model)
            and not self._resident(chosen, model, now, self.stats.get(chosen.name, model))
        ):
            # never load beside a warm idle copy
            chosen, chosen_est, chosen_plain, why = warm, warm_est, False, ""
        if chosen is not best:
            second, second_est, second_plain = best, best_est, best_plain
        head = "corral: "
        if not chosen.has_slot(model):
            line.mark(chosen.name, key, now)
            head = "corral: wait for busy, "
        if why:
            head += f"{why} on {chosen.name}, "
        mine = (
            f"loaded, {chosen.in_flight}/{chosen.max_concurrency} busy"
            if chosen_plain
            else self._explain(chosen, info, now, key)
        )
        if second is None:
            return chosen, one_line(f"{head}est ttft {chosen_est:.2f}s ({mine}), only candidate")
        theirs = (
            f"loaded, {second.in_flight}/{second.max_concurrency} busy"
            if second_plain
            else self._explain(second, info, now, key)
        )
        return chosen, one_line(
            f"{head}est ttft {chosen_est:.2f}s ({mine}) vs next {second_est:.2f}s ({theirs})"
        )

    def _prefill(self, b: BackendState, tokens: float) -> float:
        """Seconds to prefill ``tokens`` on ``b``, its busy slots sharing the GPU.

        One configured rate (``prefill_tps``): a rate learned from observed TTFTs
        would reward the backends with prefix-cache hits and queue behind them.
        """
        busy = 1.0 + self.contention * b.in_flight / b.max_concurrency
        return tokens / self.prefill_tps * busy

    def _resident(self, b: BackendState, model: str, now: float, st: ModelStats | None) -> bool:
        """Is ``model`` in memory on ``b`` (or will be, by the time a slot is ours)?"""
        if b.kind == "openai":
            return True  # OpenAI-style engines serve what they list, loaded
        if self.loads.leaving(b, model):
            return False
        if b.loaded.get(model, -1.0) > now:
            return True
        if b.in_flight_by_model.get(model):
            return self.loads.left(b.name, model, now) is None
        return self._seen_since_probe(b, now, st)

    def _seen_since_probe(self, b: BackendState, now: float, st: ModelStats | None) -> bool:
        """A request of ours ended well after the last probe: the model is resident."""
        if st is not None and now - st.last_ok < self.warm_ttl_s:
            checked = b.last_check_at
            return checked is None or st.last_ok >= checked
        return False

    def _estimate(
        self,
        b: BackendState,
        info: RequestInfo,
        now: float,
        st: ModelStats | None,
        resident: bool,
        free: bool,
        key: object,
        cutoff: float,
        parts: list[str] | None,
    ) -> float:
        """Seconds until ``info``'s first token on ``b``; ``parts`` collects why.

        Eviction costs are added only when the estimate without them is below
        ``cutoff``: they only ever add, so a candidate already out of the running
        is not priced further.
        """
        model = info.model
        service = self.default_service_s
        ok = 1.0
        if st is not None:
            if st.service is not None:
                service = max(st.service, 1e-3)
            if st.success < 1.0:
                ok = max(recovered_success(st, now, self.recovery_s), 0.05)
        est = 0.0
        if not free:
            by_model = b.in_flight_by_model.get(model, 0)
            cap = b.max_per_model  # the limit that binds says whose release frees a slot
            busy = by_model if cap is not None and by_model >= cap else b.in_flight
            est = service * (self.line.ahead(b, key) + 1) / (busy + 1)
            if parts is not None:
                parts.append(f"wait {est:.1f}s")
        est += self._prefill(b, _PREFILL_OVERHEAD_S * self.prefill_tps + info.prompt_tokens)
        may_evict = False
        if resident:
            if parts is not None:
                parts.append(f"loaded, {b.in_flight}/{b.max_concurrency} busy")
        else:
            left = self.loads.left(b.name, model, now)
            if left is not None:
                est += left
                if parts is not None:
                    parts.append(f"loading, {left:.1f}s left")
            else:
                load = self.loads.load_time(b, model, st)
                est += self.loads.queued(b.name, now) + load
                may_evict = True
                if parts is not None:
                    parts.append(f"load {load:.1f}s")
        sig = b.signals
        if sig is not None and (sig.waiting or sig.kv_cache_usage > self.kv_high):
            waiting = self._engine_waiting(b, sig) if sig.waiting else 0.0
            over = max(0.0, sig.kv_cache_usage - self.kv_high) / (1.0 - self.kv_high)
            est += waiting * self.engine_waiting_s + over * self.kv_weight_s
            if parts is not None:
                parts.append(f"kv {sig.kv_cache_usage:.2f}, {waiting:g} waiting")
        retry = (1.0 - ok) / ok * self.failure_cost_s
        if may_evict and est + retry < cutoff:
            evict = self.loads.eviction(b, model, now)
            est += evict
            if parts is not None and evict:
                parts.append(f"evict {evict:.1f}s")
        if parts is not None and ok < 0.995:
            parts.append(f"ok {ok:.2f}")
        return est + retry

    def _engine_waiting(self, b: BackendState, sig: EngineSignals) -> float:
        """The engine's queue now: as last read, moved by what we sent or finished since.

        A reading is up to a probe interval old. Taken as it stands, a queue of a few
        requests steers every decision away from that server until the next probe,
        and the others fill up (a herd each probe interval); shifted by our in-flight
        count since it was read, it drains as our requests there finish.
        """
        seen = self._signals_seen.get(b.name)
        if seen is None or seen[0] != sig.at:
            seen = self._signals_seen[b.name] = (sig.at, b.in_flight)
        return max(0.0, sig.waiting + b.in_flight - seen[1])

    def _load(self, b: BackendState) -> float:
        """Requests ahead on ``b``: ours in flight plus the engine's queue now."""
        sig = b.signals
        if sig is None or not sig.waiting:
            return float(b.in_flight)
        return b.in_flight + self._engine_waiting(b, sig)

    def _hit_worth(self, b: BackendState, info: RequestInfo, depth: int) -> float:
        """Requests of extra load on ``b`` that a hit on ``depth`` cached blocks pays for.

        The hit saves that share of the prompt's prefill; each request ahead on ``b``
        stretches a prefill by ``contention / max_concurrency`` (its slots share one
        GPU), and the extra load delays the requests already there as much as this
        one (the marginal cost of load is twice its average): break-even at half the
        saved share of the slots. A deep hit on a server with many slots is worth a
        real imbalance; a shallow one, or one on a 4-slot node, little beyond
        ``affinity_abs``.
        """
        if self.contention <= 0:
            return math.inf
        return 0.5 * depth / len(info.prefix) * b.max_concurrency / self.contention

    def attach_queue(self, depth: Callable[[str], int]) -> None:
        """Wire in the scheduler's ``queue.waiting_for`` (see :mod:`.waitline`)."""
        self.line.queue_depth = depth

    # -- hooks --------------------------------------------------------------------

    def on_dispatch(self, backend: BackendState, info: RequestInfo, now: float) -> None:
        self.line.dispatched(info.request_id or id(info))
        model = info.model
        self.loads.fleet[backend.name] = backend
        # in_flight_by_model already counts this request: more than one means others
        # went first, and they either found the model resident or started its load.
        if backend.in_flight_by_model.get(model, 0) <= 1:
            st = self.stats.get(backend.name, model)
            if not (
                backend.kind == "openai"
                or (
                    (
                        backend.loaded.get(model, -1.0) > now
                        or self._seen_since_probe(backend, now, st)
                    )
                    and not self.loads.leaving(backend, model)
                )
            ):
                self.loads.started(backend, model, now, st)
        if self.affinity is not None:
            self.affinity.record(backend, info)

    def on_complete(
        self, backend: BackendState, info: RequestInfo, outcome: Outcome, now: float
    ) -> None:
        self.stats.observe(backend.name, info.model, outcome, now)
        if outcome.ok or outcome.ttft_s is not None:
            self.loads.answered(backend.name, info.model)

    def on_backend_removed(self, name: str) -> None:
        self.stats.forget(name)
        self.loads.forget(name)
        self.line.forget(name)
        self._signals_seen.pop(name, None)
        if self.affinity is not None:
            self.affinity.forget(name)

    def _explain(self, b: BackendState, info: RequestInfo, now: float, key: object) -> str:
        st = self.stats.get(b.name, info.model)
        resident = self._resident(b, info.model, now, st)
        if (
            resident
            and b.has_slot(info.model)
            and b.signals is None
            and (st is None or st.success >= 1.0)
        ):
            return f"loaded, {b.in_flight}/{b.max_concurrency} busy"  # _estimate's one part
        parts: list[str] = []
        self._estimate(b, info, now, st, resident, b.has_slot(info.model), key, math.inf, parts)
        return ", ".join(parts)
