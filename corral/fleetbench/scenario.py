"""Fleet-benchmark scenarios: a YAML file read into plain dataclasses.

A scenario names a fleet (nodes, each an Ollama node or a vLLM server of the pure
node models in :mod:`corral.sim`), a workload (see :mod:`.arrivals`), faults, the
gateway settings the scheduler runs with, and the targets the report checks. The
four shipped ones live in ``scenarios/`` and are selected by name; any other path
to a file of the same shape works too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "SCENARIOS",
    "Fault",
    "Gateway",
    "NodeSpec",
    "Phase",
    "Scenario",
    "Workload",
    "load_scenario",
    "parse_scenario",
]

SCENARIOS = ("multi-model", "shared-prefix", "tenants", "flapping", "code-burst")


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One backend of the simulated fleet (``count`` > 1 in the file makes copies)."""

    name: str
    kind: Literal["ollama", "vllm"] = "ollama"
    models: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()  # Ollama: resident at the start
    # The gateway's view of the backend.
    max_concurrency: int = 8
    max_per_model: int | None = None
    # Ollama node (NodeConfig).
    num_parallel: int = 4
    max_loaded_models: int = 3
    vram_gb: float = 24.0
    keep_alive_s: float = 300.0
    max_queue: int = 512
    speed: float = 1.0
    # vLLM server (VllmConfig).
    max_num_seqs: int = 32
    kv_cache_tokens: int = 262144


@dataclass(frozen=True, slots=True)
class Fault:
    """``down``: unreachable over ``[start, end)`` (comes back as a fresh process, with
    nothing loaded); ``busy``: answers every request with an immediate 503 meanwhile.
    Times are fractions of the arrival span, so a shorter run keeps its faults."""

    node: str
    kind: Literal["down", "busy"]
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Phase:
    """One tenant's load in one phase: ``load`` is its Poisson rate as a fraction of
    the fleet's capacity; ``backlog`` a burst at the start, in fleet-seconds of work."""

    tenant: str
    weight: float = 1.0
    start: float = 0.0
    end: float = 0.0
    load: float = 0.0
    backlog: float = 0.0


@dataclass(frozen=True, slots=True)
class Workload:
    """Where arrivals come from.

    ``kind``: ``poisson`` (synthetic times), ``trace`` (a trace's own times),
    ``shared_prefix`` (synthetic groups) or ``tenants`` (phases). ``tokens``:
    ``azure-conv`` | ``azure-code`` | ``mooncake`` | ``lognormal``. The whole stream is
    rescaled in time so the offered load is ``load`` times the fleet's capacity.
    """

    kind: Literal["poisson", "trace", "shared_prefix", "tenants"] = "poisson"
    trace: str = "azure-conv"
    tokens: str = "azure-conv"
    models: tuple[str, ...] = ()
    zipf: float = 1.0
    requests: int = 2000
    load: float = 0.8
    mean_prompt: float = 512.0
    mean_output: float = 128.0
    prompt_scale: float = 1.0
    output_scale: float = 1.0
    max_prompt: int | None = None
    block_tokens: int = 512  # tokens per prefix id of the arrivals
    # shared_prefix
    groups: int = 16
    prefix_blocks: int = 8
    suffix_blocks: int = 2
    sessions: bool = False
    # tenants
    phases: tuple[Phase, ...] = ()


@dataclass(frozen=True, slots=True)
class Gateway:
    """The scheduler's settings, as the gateway's config would give them."""

    queue_timeout_s: float = 30.0
    max_waiting: int = 1024
    max_waiting_per_tenant: int | None = None
    aging_s: float = 30.0
    probe_interval_s: float = 2.0
    keep_alive_s: float = 300.0
    retry_attempts: int = 3
    backoff_s: float = 0.05
    backoff_max_s: float = 1.0
    # The relay's gateway-wide RetryBudget: retries <= 3 + ratio x requests per 10 s
    # (None: no budget, only the per-request attempt cap).
    retry_budget: float | None = 0.2
    busy_cooldown_s: float = 1.0  # a 503 keeps backend:model out this long (no Retry-After)
    breakers: bool = True
    policy_options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    workload: Workload
    faults: tuple[Fault, ...] = ()
    gateway: Gateway = field(default_factory=Gateway)
    ttft_slo_s: float = 2.0
    seed: int = 1
    # Jain's index windows as fractions of the arrival span, e.g. one per phase.
    fairness_windows: tuple[tuple[float, float], ...] = ()
    # What the report checks: see corral.fleetbench.report.check_targets.
    targets: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _build(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, list) and key != "phases":
            value = tuple(value)
        out[key] = value
    return cls(**out)


def parse_scenario(data: Any, name: str = "scenario") -> Scenario:
    """Turn a scenario document (parsed YAML) into a :class:`Scenario`."""
    if not isinstance(data, dict):
        raise ValueError(f"{name}: a scenario is a mapping")
    raw = dict(data)
    nodes: list[NodeSpec] = []
    for i, entry in enumerate(raw.pop("nodes", None) or []):
        entry = dict(entry)
        count = int(entry.pop("count", 1))
        base = entry.pop("name", f"node{i}")
        for k in range(count):
            label = base if count == 1 else f"{base}-{k + 1}"
            nodes.append(_build(NodeSpec, {**entry, "name": label}, f"{name}: node {label}"))
    if not nodes:
        raise ValueError(f"{name}: no nodes")
    wl = dict(raw.pop("workload", None) or {})
    phases = tuple(
        _build(Phase, p, f"{name}: phase {j}") for j, p in enumerate(wl.pop("phases", []) or [])
    )
    workload = _build(Workload, {**wl, "phases": phases}, f"{name}: workload")
    faults = tuple(
        _build(Fault, f, f"{name}: fault {j}") for j, f in enumerate(raw.pop("faults", []) or [])
    )
    names = {n.name for n in nodes}
    for f in faults:
        if f.node not in names:
            raise ValueError(f"{name}: fault on unknown node {f.node!r}")
        if not 0 <= f.start < f.end <= 1 or f.kind not in ("down", "busy"):
            raise ValueError(f"{name}: fault {f} needs 0 <= start < end <= 1 and kind down|busy")
    gateway = _build(Gateway, raw.pop("gateway", None) or {}, f"{name}: gateway")
    windows = tuple(tuple(w) for w in raw.pop("fairness_windows", []) or [])
    for w in windows:
        if len(w) != 2 or not 0 <= w[0] < w[1] <= 1:
            raise ValueError(f"{name}: fairness window {w} must be [start, end] within 0..1")
    raw.setdefault("name", name)
    raw.setdefault("description", "")
    scenario: Scenario = _build(
        Scenario,
        {
            **raw,
            "nodes": tuple(nodes),
            "workload": workload,
            "faults": faults,
            "gateway": gateway,
            "fairness_windows": windows,
        },
        name,
    )
    return scenario


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name (``multi-model``, ...) or a YAML file by path."""
    if name_or_path in SCENARIOS:
        ref = resources.files("corral.fleetbench") / "scenarios" / f"{name_or_path}.yaml"
        text = ref.read_text(encoding="utf-8")
        label = name_or_path
    else:
        path = Path(name_or_path)
        if not path.is_file():
            known = ", ".join(SCENARIOS)
            raise ValueError(f"no scenario {name_or_path!r} (shipped: {known}; or a YAML path)")
        text = path.read_text(encoding="utf-8")
        label = path.stem
    return parse_scenario(yaml.safe_load(text), label)


def finite(x: float | None) -> float | None:
    """None for None and non-finite numbers (JSON has no inf)."""
    return x if x is not None and math.isfinite(x) else None
