"""Running a scenario over several policies, the bounds line, the targets, the output.

:func:`run_scenario` runs every policy over the same arrival stream; :func:`bounds`
computes what no policy can beat (prefill-only TTFT on an idle fleet, one load per
model not resident at the start, the infinite-cache prefix hit rate);
:func:`check_targets` compares the default policy with ``least_conn`` as the
scenario's ``targets`` ask; :func:`table` and :func:`json_lines` print the result.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from corral.fleetbench.arrivals import build_arrivals, capacity_rps, model_spec
from corral.fleetbench.des import Run, simulate
from corral.fleetbench.metrics import percentile
from corral.fleetbench.scenario import Scenario
from corral.fleetbench.workload import Arrival, engine_prefix
from corral.sim.catalogue import Catalogue, normalize_name
from corral.sim.vllm_kv import chain_hashes

__all__ = ["Check", "Report", "bounds", "check_targets", "json_lines", "run_scenario", "table"]

DEFAULT_POLICY = "corral"
BASELINE = "least_conn"


@dataclass(frozen=True, slots=True)
class Check:
    target: str
    met: bool
    detail: str


@dataclass(slots=True)
class Report:
    scenario: Scenario
    arrivals: int
    capacity_rps: float
    offered_rps: float
    runs: list[Run]
    bound: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    wall_s: float = 0.0


def run_scenario(
    scenario: Scenario,
    policies: Sequence[str],
    *,
    seed: int | None = None,
    requests: int | None = None,
    duration: float | None = None,
) -> Report:
    seed = scenario.seed if seed is None else seed
    started = time.perf_counter()
    arrivals = build_arrivals(scenario, seed=seed, requests=requests, duration=duration)
    runs = [simulate(scenario, p, arrivals, seed=seed) for p in policies]
    span = arrivals[-1].t - arrivals[0].t if len(arrivals) > 1 else 0.0
    report = Report(
        scenario,
        len(arrivals),
        capacity_rps(scenario, arrivals),
        (len(arrivals) - 1) / span if span > 0 else 0.0,
        runs,
        bounds(scenario, arrivals),
    )
    report.checks = check_targets(scenario, runs, arrivals)
    report.wall_s = time.perf_counter() - started
    return report


def bounds(scenario: Scenario, arrivals: Sequence[Arrival]) -> dict[str, Any]:
    """The oracle line: no policy does better than these on this fleet and stream."""
    catalogue = Catalogue.builtin()
    ttft = []
    for a in arrivals:
        best = math.inf
        for node in scenario.nodes:
            names = {normalize_name(m): m for m in node.models}
            if a.model in names:
                spec = model_spec(node, names[a.model], catalogue)
                best = min(best, a.prompt_tokens / spec.prompt_tps + 1.0 / spec.gen_tps)
        if math.isfinite(best):
            ttft.append(best)
    resident = {normalize_name(m) for n in scenario.nodes for m in n.preload}
    resident |= {normalize_name(m) for n in scenario.nodes if n.kind == "vllm" for m in n.models}
    needed = {a.model for a in arrivals} - resident
    return {
        "p50_ttft_s": percentile(ttft, 50) if ttft else None,
        "p99_ttft_s": percentile(ttft, 99) if ttft else None,
        "model_loads": len(needed),
        "prefix_hit_pooled": pooled_prefix_bound(scenario, arrivals),
    }


def pooled_prefix_bound(scenario: Scenario, arrivals: Sequence[Arrival]) -> float | None:
    """Hit rate of ONE LRU cache as large as all the vLLM servers' KV caches together.

    What a perfect router could reach if the fleet's caches acted as one (the
    infinite-cache bound ignores that a finite cache forgets). Per token as vLLM
    counts: leading cached blocks, at most ``(P - 1) // 16`` of a ``P``-token prompt.
    """
    vllm = [n for n in scenario.nodes if n.kind == "vllm"]
    if not vllm or not any(a.prefix for a in arrivals):
        return None
    block = 16
    capacity = sum(n.kv_cache_tokens for n in vllm) // block
    lru: OrderedDict[int, None] = OrderedDict()
    hits = total = 0
    for a in arrivals:
        ids = chain_hashes(engine_prefix(a.prefix, scenario.workload.block_tokens, block))
        full = ids[: a.prompt_tokens // block]
        usable = max(0, (a.prompt_tokens - 1) // block)
        lead = 0
        for i, h in enumerate(full):
            if i >= usable or h not in lru:
                break
            lead += 1
        for h in full:
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > capacity:
            lru.popitem(last=False)
        hits += lead * block
        total += a.prompt_tokens
    return hits / total if total else None


def _p99_light_wait(
    scenario: Scenario, run: Run, arrivals: Sequence[Arrival]
) -> tuple[float | None, float | None]:
    """p99 queue wait of the light tenants in phase two, and the typical service time."""
    targets = scenario.targets
    light = set(targets.get("light_tenants", ()))
    t0, t1 = arrivals[0].t, arrivals[-1].t
    start = t0 + float(targets.get("phase2_start", 0.5)) * (t1 - t0)
    waits = [
        r.queued_s
        for r in run.records
        if r.tenant in light and r.t >= start and r.queued_s is not None
    ]
    service = [
        r.e2e_s - (r.queued_s or 0.0)
        for r in run.records
        if r.status == "ok" and r.e2e_s is not None
    ]
    return (
        percentile(waits, 99) if waits else None,
        statistics.median(service) if service else None,
    )


def check_targets(
    scenario: Scenario, runs: Sequence[Run], arrivals: Sequence[Arrival]
) -> list[Check]:
    """The scenario's targets for the default policy (ratios against least_conn)."""
    by = {r.result.policy: r for r in runs}
    main = by.get(DEFAULT_POLICY)
    if main is None:
        return []
    base = by.get(BASELINE)
    t = scenario.targets
    out: list[Check] = []
    res = main.result
    if "p99_ttft_ratio_max" in t and base is not None:
        a, b = res.p99_ttft_s, base.result.p99_ttft_s
        ratio = a / b if a is not None and b else math.inf
        out.append(
            Check(
                f"p99 TTFT <= {t['p99_ttft_ratio_max']}x least_conn",
                ratio <= t["p99_ttft_ratio_max"],
                f"{_num(a)}s vs {_num(b)}s = {ratio:.2f}x",
            )
        )
    if "model_loads_ratio_max" in t and base is not None:
        a2, b2 = res.model_loads, base.result.model_loads
        ratio = a2 / b2 if b2 else math.inf
        out.append(
            Check(
                f"model loads <= {t['model_loads_ratio_max']}x least_conn",
                ratio <= t["model_loads_ratio_max"],
                f"{a2} vs {b2} = {ratio:.2f}x",
            )
        )
    if "prefix_bound_fraction_min" in t:
        rate, bound = res.prefix_hit_rate, res.prefix_hit_bound
        frac = rate / bound if rate is not None and bound else 0.0
        out.append(
            Check(
                f"prefix hit rate >= {t['prefix_bound_fraction_min']:.0%} of the bound",
                frac >= t["prefix_bound_fraction_min"],
                f"{_pct(rate)} of {_pct(bound)} = {frac:.0%}",
            )
        )
    if "inflight_cv_max" in t:
        cv = main.extras.get("inflight_cv")
        out.append(
            Check(
                f"in-flight CV <= {t['inflight_cv_max']}",
                cv is not None and cv <= t["inflight_cv_max"],
                f"CV {_num(cv)}",
            )
        )
    if "jain_min" in t:
        out.append(
            Check(
                f"Jain (phase one) >= {t['jain_min']}",
                res.jain is not None and res.jain >= t["jain_min"],
                f"Jain {_num(res.jain, 3)}",
            )
        )
    if "light_tenants" in t:
        wait, service = _p99_light_wait(scenario, main, arrivals)
        out.append(
            Check(
                "phase two: light tenants' p99 queue wait < a typical service time",
                wait is not None and service is not None and wait < service,
                f"p99 wait {_num(wait)}s vs median service {_num(service)}s",
            )
        )
    if "failed_before_stream_max" in t:
        n = main.extras.get("failed_before_stream", 0) + _late_failures(main)
        out.append(
            Check(
                "no failed request among those not yet streaming",
                n <= t["failed_before_stream_max"],
                f"{n} failed before streaming, "
                f"{main.extras.get('failed_mid_stream', 0)} cut off mid-stream",
            )
        )
    return out


def _late_failures(run: Run) -> int:
    """Failed requests that never streamed but did not end in an attempt's failure:
    they failed over and then found no backend or timed out in the queue."""
    failed = run.result.failed
    counted = int(run.extras.get("failed_before_stream", 0))
    counted += int(run.extras.get("failed_mid_stream", 0))
    return max(0, failed - counted)


# -- output -------------------------------------------------------------------------

_COLUMNS = (
    ("policy", "policy", None),
    ("p50 TTFT s", "p50_ttft_s", 2),
    ("p99 TTFT s", "p99_ttft_s", 2),
    ("p99 e2e s", "p99_e2e_s", 2),
    ("goodput rps", "goodput_rps", 2),
    ("loads", "model_loads", None),
    ("prefix hit", "prefix_hit_rate", "%"),
    ("inf. bound", "prefix_hit_bound", "%"),
    ("pooled", "prefix_hit_pooled", "%"),
    ("Jain", "jain", 3),
    ("in-flight CV", "inflight_cv", 2),
    ("rejected", "rejected", None),
    ("failed", "failed", None),
    ("mid-stream", "failed_mid_stream", None),
    ("retries", "retries", None),
)


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _cell(row: dict[str, Any], key: str, fmt: Any) -> str:
    value = row.get(key)
    if fmt == "%":
        return _pct(value)
    if isinstance(fmt, int):
        return _num(value, fmt)
    return _num(value)


def _bound_row(report: Report) -> dict[str, Any]:
    row: dict[str, Any] = {"policy": "(bound)", **report.bound}
    if report.runs:
        row["prefix_hit_rate"] = report.runs[0].result.prefix_hit_bound
    return row


def rows(report: Report) -> list[dict[str, Any]]:
    pooled = {"prefix_hit_pooled": report.bound.get("prefix_hit_pooled")}
    return [*({**r.to_dict(), **pooled} for r in report.runs), _bound_row(report)]


def table(report: Report) -> Table:
    sc = report.scenario
    title = (
        f"{sc.name}: {report.arrivals} requests, offered {report.offered_rps:.2f} req/s "
        f"(capacity estimate {report.capacity_rps:.2f}); TTFT SLO {sc.ttft_slo_s:g}s"
    )
    t = Table(title=title, caption=sc.description)
    for label, _, _ in _COLUMNS:
        t.add_column(label, justify="left" if label == "policy" else "right")
    for row in rows(report):
        t.add_row(*(_cell(row, key, fmt) for _, key, fmt in _COLUMNS))
    return t


def markdown(report: Report) -> str:
    """The same table as GitHub Markdown (for BENCHMARKS.md)."""
    head = "| " + " | ".join(label for label, _, _ in _COLUMNS) + " |"
    sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(_COLUMNS))) + "|"
    lines = [head, sep]
    for row in rows(report):
        lines.append("| " + " | ".join(_cell(row, k, f) for _, k, f in _COLUMNS) + " |")
    return "\n".join(lines)


def json_lines(report: Report) -> list[str]:
    """One JSON object per policy (``--json``); the bounds ride along as ``bound_*``."""
    extra = {f"bound_{k}": v for k, v in report.bound.items()}
    meta = {"scenario": report.scenario.name, "arrivals": report.arrivals}
    return [
        json.dumps(_finite({**r.to_dict(), **extra, **meta}), allow_nan=False) for r in report.runs
    ]


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }
