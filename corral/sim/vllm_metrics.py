"""vLLM's ``/metrics`` for the simulator: the recorder and the Prometheus text exposition.

Names, help texts, labels (``model_name``, ``engine``) and histogram buckets follow
vLLM's ``v1/metrics/loggers.py``; the text follows prometheus_client's exposition rules
(``# HELP`` / ``# TYPE`` lines, a counter ``x`` exposed as ``x_total`` plus
``x_created``, histograms as ``_bucket{le=...}`` / ``_count`` / ``_sum``). Pure: the
recorder is fed durations, the renderer reads a :class:`Snapshot`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from corral.sim.model_types import VllmStats

__all__ = ["E2E_BUCKETS", "TTFT_BUCKETS", "Histogram", "MetricsRecorder", "Snapshot", "render"]

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


@dataclass(slots=True)
class Histogram:
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        # Prometheus buckets are upper-inclusive: le="0.1" counts 0.1 itself.
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class MetricsRecorder:
    """Per-request observations the engine counters do not hold."""

    created: float = 0.0  # wall-clock seconds, for the `_created` samples
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    success: Counter[str] = field(default_factory=Counter)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def done(self, seconds: float, reason: str) -> None:
        self.e2e.observe(seconds)
        self.finished(reason)

    def finished(self, reason: str) -> None:
        self.success[reason or "stop"] += 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    running: int
    waiting: int
    kv_cache_usage: float
    stats: VllmStats


def go_float(value: float) -> str:
    """A float as Prometheus' Go client writes it (and prometheus_client copies)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Writer:
    def __init__(self, model_name: str, created: float) -> None:
        self.base = f'model_name="{_escape(model_name)}",engine="0"'
        self.created = created
        self.lines: list[str] = []

    def head(self, name: str, kind: str, doc: str) -> None:
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, extra: str = "") -> None:
        labels = self.base + (f",{extra}" if extra else "")
        self.lines.append(f"{name}{{{labels}}} {go_float(value)}")

    def gauge(self, name: str, doc: str, value: float) -> None:
        self.head(name, "gauge", doc)
        self.sample(name, value)

    def counter(self, name: str, doc: str, values: dict[str, float] | float) -> None:
        self.head(f"{name}_total", "counter", doc)
        pairs = values.items() if isinstance(values, dict) else [("", values)]
        for extra, v in pairs:
            self.sample(f"{name}_total", v, extra)
        for extra, _ in pairs:
            self.sample(f"{name}_created", self.created, extra)

    def histogram(self, name: str, doc: str, h: Histogram) -> None:
        self.head(name, "histogram", doc)
        running = 0
        for bound, n in zip([*h.buckets, math.inf], h.counts, strict=True):
            running += n
            self.sample(f"{name}_bucket", running, f'le="{go_float(bound)}"')
        self.sample(f"{name}_count", h.count)
        self.sample(f"{name}_sum", h.total)
        self.sample(f"{name}_created", self.created)


def render(model_name: str, snap: Snapshot, rec: MetricsRecorder) -> str:
    """The ``/metrics`` body (``text/plain; version=0.0.4``)."""
    s = snap.stats
    w = _Writer(model_name, rec.created)
    w.gauge(
        "vllm:num_requests_running", "Number of requests in model execution batches.", snap.running
    )
    w.gauge(
        "vllm:num_requests_waiting", "Number of requests waiting to be processed.", snap.waiting
    )
    w.gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        snap.kv_cache_usage,
    )
    w.counter(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        s.prefix_queries,
    )
    w.counter(
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        s.prefix_hits,
    )
    w.counter(
        "vllm:num_preemptions", "Cumulative number of preemption from the engine.", s.preemptions
    )
    w.counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
    w.counter(
        "vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens
    )
    reasons = {"stop": 0, "length": 0, "abort": 0, **rec.success}
    w.counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        {f'finished_reason="{_escape(k)}"': float(v) for k, v in sorted(reasons.items())},
    )
    w.histogram(
        "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", rec.ttft
    )
    w.histogram(
        "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", rec.e2e
    )
    return "\n".join(w.lines) + "\n"
