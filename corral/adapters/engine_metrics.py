"""Read an engine's Prometheus /metrics (vLLM's names) into EngineSignals."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from corral.core.types import EngineSignals

__all__ = ["parse_vllm_metrics"]

# vLLM metric family -> EngineSignals field. Counters are listed by family name; the
# exposition adds "_total" to their samples. gpu_cache_usage_perc is the old name.
_FIELDS = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:num_preemptions": "preemptions",
}


def parse_vllm_metrics(text: str, at: float) -> EngineSignals | None:
    """The signals in a /metrics page, or None when it has no vLLM metric at all."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        name = _FIELDS.get(family.name) or _FIELDS.get(family.name.removesuffix("_total"))
        if name is None:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket", "_sum", "_count")):
                continue
            if name == "kv_cache_usage":
                # A usage fraction does not add up over models: keep the fullest.
                values[name] = max(values.get(name, 0.0), sample.value)
            else:
                values[name] = values.get(name, 0.0) + sample.value
    if not values:
        return None
    return EngineSignals(at=at, **values)
