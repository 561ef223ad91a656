"""A scenario's arrival stream, fitted to its fleet's capacity.

The generators and trace readers are :mod:`.workload` and :mod:`.traces`; this
module picks among them from a :class:`~.scenario.Workload` and rescales the stream
in time so the offered load is the stated fraction of what the fleet can serve.

Capacity is an estimate in requests per second from the same node specs the
simulation runs: for an Ollama node, ``max_concurrency`` slots each serving at the
per-request speed of a runner with ``num_parallel`` requests; for a vLLM server, the
prefill of each request alone plus its decode shared by a full batch. Model loads,
queueing and prefix hits are left out: they are what the policies differ on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

from corral.fleetbench.scenario import NodeSpec, Scenario, Workload
from corral.fleetbench.traces import TraceRow, load_azure, load_mooncake, spread_ties
from corral.fleetbench.workload import (
    Arrival,
    TenantLoad,
    TokenSampler,
    factor_for_load,
    lognormal_tokens,
    poisson_workload,
    replay,
    rescale,
    shared_prefix_workload,
    tenant_workload,
    trace_tokens,
    zipf_picker,
)
from corral.sim.catalogue import Catalogue, ModelSpec, normalize_name
from corral.sim.vllm_catalogue import served_spec

__all__ = ["build_arrivals", "capacity_rps", "model_spec"]

_CONCURRENCY_EXPONENT = 0.65  # NodeConfig's default: n requests on a runner ~ n**0.65
_BATCH_SLOWDOWN = 0.015  # VllmConfig's default


def model_spec(node: NodeSpec, model: str, catalogue: Catalogue) -> ModelSpec:
    if node.kind == "vllm":
        return served_spec(model)
    return catalogue.get(normalize_name(model))


def _rows(name: str) -> list[TraceRow]:
    if name == "mooncake":
        return spread_ties(load_mooncake())
    if name in ("azure-conv", "azure-code"):
        return load_azure("conv" if name == "azure-conv" else "code")
    raise ValueError(f"unknown trace {name!r} (azure-conv, azure-code, mooncake)")


def _tokens(wl: Workload) -> TokenSampler:
    if wl.tokens == "lognormal":
        return lognormal_tokens(wl.mean_prompt, wl.mean_output)
    rows = _rows(wl.tokens)
    if wl.max_prompt is not None:
        rows = [r for r in rows if r.prompt_tokens <= wl.max_prompt]
    return trace_tokens(rows, prompt_scale=wl.prompt_scale, output_scale=wl.output_scale)


def capacity_rps(scenario: Scenario, arrivals: Sequence[Arrival]) -> float:
    """Requests per second the fleet serves for this mix (see the module docstring)."""
    catalogue = Catalogue.builtin()
    if not arrivals:
        return 1.0
    total = 0.0
    for node in scenario.nodes:
        held = {normalize_name(m) for m in node.models}
        mine = [a for a in arrivals if a.model in held] or list(arrivals)
        by_name = {normalize_name(m): m for m in node.models}
        busy = 0.0  # mean seconds of one slot per request
        for a in mine:
            spec = model_spec(node, by_name.get(a.model, a.model), catalogue)
            if node.kind == "vllm":
                batch = max(1, min(node.max_num_seqs, node.max_concurrency))
                decode = a.output_tokens * (1 + _BATCH_SLOWDOWN * (batch - 1)) / spec.gen_tps
                busy += a.prompt_tokens / spec.prompt_tps * batch + decode
            else:
                alone = a.prompt_tokens / spec.prompt_tps + a.output_tokens / spec.gen_tps
                share = max(1, node.num_parallel) ** (1 - _CONCURRENCY_EXPONENT)
                busy += alone * share / node.speed
        busy /= len(mine)
        total += node.max_concurrency / busy
    return total


def _fit(scenario: Scenario, arrivals: list[Arrival], load: float) -> list[Arrival]:
    cap = capacity_rps(scenario, arrivals)
    return rescale(arrivals, factor_for_load(arrivals, cap, load))


def build_arrivals(
    scenario: Scenario, *, seed: int, requests: int | None = None, duration: float | None = None
) -> list[Arrival]:
    """The scenario's arrivals, at its load; ``requests`` / ``duration`` cut it short."""
    wl = scenario.workload
    n = requests if requests is not None else wl.requests
    models = wl.models or tuple(dict.fromkeys(m for node in scenario.nodes for m in node.models))
    picker = zipf_picker(models, wl.zipf)
    if wl.kind == "tenants":
        out = _tenants(scenario, seed, n)
    elif wl.kind == "trace":
        rows = _rows(wl.trace)[:n]
        if wl.max_prompt is not None:
            rows = [r for r in rows if r.prompt_tokens <= wl.max_prompt]
        out = replay(
            rows,
            models=picker,
            seed=seed,
            prompt_scale=wl.prompt_scale,
            output_scale=wl.output_scale,
        )
        out = _fit(scenario, out, wl.load)
    elif wl.kind == "shared_prefix":
        out = shared_prefix_workload(
            groups=wl.groups,
            prefix_blocks=wl.prefix_blocks,
            suffix_blocks=wl.suffix_blocks,
            block_tokens=wl.block_tokens,
            rate=1.0,
            duration=n * 1.0,
            model=models[0],
            mean_output=wl.mean_output,
            seed=seed,
            group_sessions=wl.sessions,
        )[:n]
        out = _fit(scenario, out, wl.load)
    else:
        out = poisson_workload(
            rate=1.0, duration=n * 2.0, models=picker, tokens=_tokens(wl), seed=seed
        )[:n]
        out = _fit(scenario, out, wl.load)
    if duration is not None:
        out = [a for a in out if a.t < duration]
    return out


def _tenants(scenario: Scenario, seed: int, n: int) -> list[Arrival]:
    """Phases in seconds; rates and backlogs relative to capacity; ``n`` sizes the run."""
    wl = scenario.workload
    models = wl.models or scenario.nodes[0].models
    picker = zipf_picker(models, wl.zipf)
    tokens = _tokens(wl)
    # Capacity for this token mix, from a sample of it.
    rng = random.Random(seed)
    probe = [Arrival(float(i), picker(rng), *tokens(rng)) for i in range(500)]
    cap = capacity_rps(scenario, probe)
    # Expected request count of the phases as written; stretch time to reach ``n``.
    expected = sum((p.load * (p.end - p.start) + p.backlog) * cap for p in wl.phases)
    stretch = n / expected if expected > 0 else 1.0
    loads = []
    for p in wl.phases:
        start, end = p.start * stretch, p.end * stretch
        loads.append(
            TenantLoad(
                tenant=p.tenant,
                weight=p.weight,
                rate=p.load * cap,
                backlog=math.ceil(p.backlog * cap * stretch),
                start=start,
                end=end,
            )
        )
    out = tenant_workload(loads, models=picker, tokens=tokens, seed=seed)
    return [replace(a, model=normalize_name(a.model)) for a in out]
