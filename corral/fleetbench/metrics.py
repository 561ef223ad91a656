"""Scoring a fleet-benchmark run: pure functions over per-request records.

The simulation driver feeds one :class:`RequestRecord` per request into a
:class:`Collector` and asks it for the :class:`Result` of a policy. Conventions:

* percentiles are nearest-rank (no interpolation): the value at rank
  ``ceil(q/100 * n)`` of the sorted sample, so p99 of 100 values is the 99th;
* goodput counts completed requests whose TTFT is within the SLO, per second of the
  measured span (first arrival to last finish unless the driver says otherwise);
* fairness is Jain's index over weighted service among tenants backlogged (at least
  one request waiting in the gateway queue) throughout a window; service is
  ``prompt + 2 * output`` tokens over the tenant's weight, the prompt counted when
  the request is dispatched and the output spread evenly from first token to done;
* the prefix bound is what an unbounded cache shared by the whole fleet would hit.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from corral.fleetbench.workload import Arrival

__all__ = [
    "Collector",
    "RequestRecord",
    "Result",
    "Status",
    "backlogged_tenants",
    "cv",
    "goodput",
    "jain",
    "percentile",
    "prefix_hit_bound",
    "weighted_service",
]

Status = Literal["ok", "rejected", "failed"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What happened to one request. Times are seconds; ``t`` is its arrival."""

    t: float
    tenant: str
    weight: float
    model: str
    backend: str | None  # None when never dispatched
    queued_s: float | None  # arrival -> dispatch (or -> leaving the queue); None: never queued
    ttft_s: float | None  # arrival -> first token
    e2e_s: float | None  # arrival -> last token
    prompt_tokens: int
    output_tokens: int
    status: Status = "ok"
    prefix_hit_tokens: int = 0  # prompt tokens the backend's prefix cache served


# --- plain statistics ----------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile, ``0 <= q <= 100`` (q = 0 is the minimum)."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[rank - 1]


def goodput(ttfts: Iterable[float], slo_s: float, span_s: float) -> float:
    """Requests with TTFT within ``slo_s``, per second of ``span_s``."""
    if span_s <= 0:
        raise ValueError("span must be positive")
    return sum(1 for t in ttfts if t <= slo_s) / span_s


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)``: 1 when all are equal, 1/n
    when one takes everything. All zeros count as equal (1.0)."""
    if not values:
        raise ValueError("Jain's index of no values")
    squares = sum(x * x for x in values)
    if squares == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * squares)


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation (population stdev / mean); 0 for an all-zero series."""
    if not values:
        raise ValueError("cv of no values")
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean else 0.0


# --- fairness --------------------------------------------------------------------------


_EPS = 1e-9


def backlogged_tenants(records: Iterable[RequestRecord], start: float, end: float) -> set[str]:
    """Tenants with a request waiting in the queue at every instant of ``[start, end]``."""
    waits: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        if r.queued_s is not None:
            waits[r.tenant].append((r.t, r.t + r.queued_s))
    out = set()
    for tenant, spans in waits.items():
        covered = start
        for s, e in sorted(spans):
            if s > covered + _EPS:
                break
            covered = max(covered, e)
            if covered >= end - _EPS:
                out.add(tenant)
                break
    return out


def weighted_service(
    records: Iterable[RequestRecord],
    start: float,
    end: float,
    tenants: Iterable[str] | None = None,
    output_cost: float = 2.0,
) -> dict[str, float]:
    """Service each tenant received within ``[start, end)``, divided by its weight.

    Only completed requests count. ``tenants`` defaults to those backlogged throughout
    the window (:func:`backlogged_tenants`); every listed tenant gets an entry.
    """
    recs = list(records)
    chosen = backlogged_tenants(recs, start, end) if tenants is None else set(tenants)
    service = dict.fromkeys(chosen, 0.0)
    for r in recs:
        if r.tenant not in service or r.status != "ok" or r.ttft_s is None or r.e2e_s is None:
            continue
        got = 0.0
        dispatched = r.t + (r.queued_s or 0.0)
        if start <= dispatched < end:
            got += r.prompt_tokens
        first, done = r.t + r.ttft_s, r.t + r.e2e_s
        if done > first:
            overlap = max(0.0, min(done, end) - max(first, start))
            got += output_cost * r.output_tokens * overlap / (done - first)
        elif start <= done < end:
            got += output_cost * r.output_tokens
        service[r.tenant] += got / (r.weight or 1.0)
    return service


# --- prefix caching --------------------------------------------------------------------


def prefix_hit_bound(arrivals: Iterable[Arrival], block_tokens: int | None = None) -> float | None:
    """Hit rate of an unbounded prefix cache shared by every backend.

    A block hits when the whole chain of blocks up to it was in an earlier request's
    prompt; hits stop at the first miss (only leading blocks count, as in vLLM).

    * ``block_tokens=None`` — per block: leading hit blocks / all prefix blocks. This
      is the trace-only figure (about 37% over the whole Mooncake conversation trace).
    * ``block_tokens=B`` — per token, as vLLM counts ``prefix_cache_hits/queries``:
      a request of ``P`` prompt tokens caches its ``P // B`` full blocks, hits at most
      ``(P - 1) // B`` of them (the last token is always computed) and each hit is
      ``B`` tokens; the denominator is all prompt tokens, prefixed or not.

    None when no arrival carries a prefix.
    """
    nodes: dict[tuple[int, int], int] = {}  # (parent node, block id) -> node: an exact trie
    hits = total = 0
    any_prefix = False
    for a in arrivals:
        any_prefix = any_prefix or bool(a.prefix)
        if block_tokens is None:
            usable, cached = len(a.prefix), len(a.prefix)
        else:
            usable = min(len(a.prefix), max(0, (a.prompt_tokens - 1) // block_tokens))
            cached = min(len(a.prefix), a.prompt_tokens // block_tokens)
        leading, parent, missed = 0, 0, False
        for i, block in enumerate(a.prefix[:cached]):
            node = nodes.get((parent, block))
            if node is None:
                missed = True
                node = nodes[(parent, block)] = len(nodes) + 1
            elif not missed and i < usable:
                leading += 1
            parent = node
        if block_tokens is None:
            hits, total = hits + leading, total + len(a.prefix)
        else:
            hits, total = hits + leading * block_tokens, total + a.prompt_tokens
    if not any_prefix or total == 0:
        return None
    return hits / total


# --- the result of one policy ----------------------------------------------------------


@dataclass(slots=True)
class Result:
    """One line of the benchmark's report; :meth:`to_json` is what ``--json`` prints.

    None means "not measured here" (no completed request, no prefixes, no window).
    """

    policy: str
    p50_ttft_s: float | None
    p99_ttft_s: float | None
    p99_e2e_s: float | None
    goodput_rps: float
    model_loads: int
    prefix_hit_rate: float | None
    prefix_hit_bound: float | None
    jain: float | None
    rejected: int
    failed: int
    # extras
    completed: int = 0
    ttft_slo_s: float | None = None
    span_s: float = 0.0
    load_cv: float | None = None  # of completed requests per backend
    p99_queue_wait_s: dict[str, float] = field(default_factory=dict)  # per tenant
    jain_windows: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)


class Collector:
    """Gathers one policy's per-request records and scores them.

    ``fairness_windows`` are the ``(start, end)`` spans over which Jain's index is
    taken (e.g. one per phase); ``jain`` reports the worst of them.
    """

    def __init__(
        self,
        policy: str,
        *,
        ttft_slo_s: float,
        fairness_windows: Sequence[tuple[float, float]] = (),
    ) -> None:
        self.policy = policy
        self.ttft_slo_s = ttft_slo_s
        self.fairness_windows = list(fairness_windows)
        self.records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        self.records.append(record)

    def result(
        self,
        *,
        model_loads: int = 0,
        prefix_hit_bound: float | None = None,
        span_s: float | None = None,
        backends: Iterable[str] = (),
    ) -> Result:
        """Score the records. ``backends`` names every backend so idle ones count as 0
        in ``load_cv``; ``span_s`` overrides the measured span for goodput."""
        recs = self.records
        ok = [r for r in recs if r.status == "ok" and r.ttft_s is not None]
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        e2es = [r.e2e_s for r in ok if r.e2e_s is not None]
        span = self._span() if span_s is None else span_s
        prompt = sum(r.prompt_tokens for r in ok)
        windows = [self._jain(start, end) for start, end in self.fairness_windows]
        measured = [j for j in windows if j is not None]
        return Result(
            policy=self.policy,
            p50_ttft_s=percentile(ttfts, 50) if ttfts else None,
            p99_ttft_s=percentile(ttfts, 99) if ttfts else None,
            p99_e2e_s=percentile(e2es, 99) if e2es else None,
            goodput_rps=goodput(ttfts, self.ttft_slo_s, span) if span > 0 else 0.0,
            model_loads=model_loads,
            prefix_hit_rate=sum(r.prefix_hit_tokens for r in ok) / prompt if prompt else None,
            prefix_hit_bound=prefix_hit_bound,
            jain=min(measured) if measured else None,
            rejected=sum(1 for r in recs if r.status == "rejected"),
            failed=sum(1 for r in recs if r.status == "failed"),
            completed=len(ok),
            ttft_slo_s=self.ttft_slo_s,
            span_s=span,
            load_cv=self._load_cv(ok, backends),
            p99_queue_wait_s=self._queue_p99(),
            jain_windows=windows,
        )

    def _span(self) -> float:
        if not self.records:
            return 0.0
        first = min(r.t for r in self.records)
        last = max(r.t + (r.e2e_s or 0.0) for r in self.records)
        return last - first

    def _jain(self, start: float, end: float) -> float | None:
        service = weighted_service(self.records, start, end)
        return jain(list(service.values())) if service else None

    @staticmethod
    def _load_cv(ok: Sequence[RequestRecord], backends: Iterable[str]) -> float | None:
        counts = dict.fromkeys(backends, 0)
        for r in ok:
            if r.backend is not None:
                counts[r.backend] = counts.get(r.backend, 0) + 1
        return cv(list(counts.values())) if counts else None

    def _queue_p99(self) -> dict[str, float]:
        waits: dict[str, list[float]] = defaultdict(list)
        for r in self.records:
            if r.queued_s is not None:
                waits[r.tenant].append(r.queued_s)
        return {tenant: percentile(w, 99) for tenant, w in sorted(waits.items())}
