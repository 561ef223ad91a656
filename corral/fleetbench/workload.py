"""Arrival streams for the fleet benchmark: synthetic generators and trace replays.

Everything is deterministic from a ``seed`` (each generator owns a ``random.Random``);
an arrival stream is a list of :class:`Arrival` sorted by ``t``. Streams compose with
:func:`merge` and are fitted to a simulated fleet with :func:`rescale` (time) and
:func:`scale_tokens` (sizes); :func:`factor_for_load` picks the time factor that puts
the offered load at a chosen fraction of a stated capacity.

Prefix blocks: ``Arrival.prefix`` holds one id per prompt block; equal leading ids
mean shareable KV cache. A block stands for ``block_tokens`` tokens — 512 for the
Mooncake trace as recorded. Scaling prompt tokens by ``s`` keeps the ids (so the
sharing structure is the trace's) and makes each block ``512 * s`` tokens; with
``s = 1/32`` a block is exactly one 16-token vLLM block. :func:`engine_prefix` splits
coarser blocks into an engine's block size when the tokens are left unscaled.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate, chain
from typing import Literal

from corral.fleetbench.traces import TraceRow
from corral.sim.catalogue import normalize_name

__all__ = [
    "Arrival",
    "LoadMeasure",
    "ModelPicker",
    "TenantLoad",
    "TokenSampler",
    "engine_prefix",
    "factor_for_load",
    "fixed_model",
    "lognormal_tokens",
    "merge",
    "offered_load",
    "poisson_times",
    "poisson_workload",
    "replay",
    "rescale",
    "scale_tokens",
    "shared_prefix_workload",
    "tenant_workload",
    "trace_tokens",
    "zipf_picker",
    "zipf_weights",
]

TokenSampler = Callable[[random.Random], tuple[int, int]]  # -> (prompt, output)
ModelPicker = Callable[[random.Random], str]
LoadMeasure = Literal["requests", "tokens", "output_tokens"]


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float  # seconds from start
    model: str  # normalized "name:tag"
    prompt_tokens: int
    output_tokens: int
    tenant: str = ""
    weight: float = 1.0
    priority: int = 0
    prefix: tuple[int, ...] = ()  # block hashes (Mooncake: 512-token blocks)
    session: str | None = None


# --- building blocks ---------------------------------------------------------------


def poisson_times(
    rate: float,
    rng: random.Random,
    *,
    duration: float | None = None,
    count: int | None = None,
    start: float = 0.0,
) -> list[float]:
    """Arrival times of a Poisson process of ``rate``/s from ``start``.

    Stops after ``duration`` seconds or ``count`` arrivals, whichever comes first;
    at least one of them must be given.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if duration is None and count is None:
        raise ValueError("give a duration or a count")
    end = math.inf if duration is None else start + duration
    limit = math.inf if count is None else count
    out: list[float] = []
    t = start
    while len(out) < limit:
        t += rng.expovariate(rate)
        if t >= end:
            break
        out.append(t)
    return out


def zipf_weights(n: int, exponent: float) -> list[float]:
    """Probabilities of ranks 1..n under Zipf: p(k) ~ 1 / k**exponent (0 = uniform)."""
    if n < 1:
        raise ValueError("need at least one item")
    raw = [1.0 / (k**exponent) for k in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def zipf_picker(models: Sequence[str], exponent: float = 1.0) -> ModelPicker:
    """Pick a model with Zipf popularity; ``models[0]`` is the most popular."""
    names = [normalize_name(m) for m in models]
    cum = _cumulative(zipf_weights(len(names), exponent))

    def pick(rng: random.Random) -> str:
        return rng.choices(names, cum_weights=cum)[0]

    return pick


def _cumulative(weights: Iterable[float]) -> list[float]:
    return list(accumulate(weights))


def fixed_model(model: str) -> ModelPicker:
    """Every arrival asks for the same model."""
    name = normalize_name(model)
    return lambda _rng: name


def lognormal_tokens(
    mean_prompt: float,
    mean_output: float,
    *,
    sigma: float = 0.8,
    max_prompt: int = 8192,
    max_output: int = 2048,
) -> TokenSampler:
    """Prompt and output sizes drawn independently from lognormals with these means.

    ``sigma`` is the spread of the underlying normal (0.8 gives a p99/median ratio of
    about 6, near the Azure conversation trace); draws are clipped to ``[1, max]``.
    """
    mu_p = math.log(mean_prompt) - sigma * sigma / 2
    mu_o = math.log(mean_output) - sigma * sigma / 2

    def sample(rng: random.Random) -> tuple[int, int]:
        p = min(max_prompt, max(1, round(rng.lognormvariate(mu_p, sigma))))
        o = min(max_output, max(1, round(rng.lognormvariate(mu_o, sigma))))
        return p, o

    return sample


def trace_tokens(
    rows: Sequence[TraceRow], *, prompt_scale: float = 1.0, output_scale: float = 1.0
) -> TokenSampler:
    """Sizes sampled (with replacement) from a trace's rows, optionally scaled."""
    if not rows:
        raise ValueError("no trace rows to sample from")

    def sample(rng: random.Random) -> tuple[int, int]:
        row = rows[rng.randrange(len(rows))]
        return _scaled(row.prompt_tokens, prompt_scale), _scaled(row.output_tokens, output_scale)

    return sample


def _scaled(tokens: int, factor: float) -> int:
    return max(1, round(tokens * factor))


# --- generators ----------------------------------------------------------------------


def poisson_workload(
    *,
    rate: float,
    duration: float,
    models: ModelPicker,
    tokens: TokenSampler,
    seed: int,
    tenant: str = "",
    weight: float = 1.0,
    priority: int = 0,
    start: float = 0.0,
) -> list[Arrival]:
    """Poisson arrivals; each picks its model and sizes independently."""
    rng = random.Random(seed)
    out: list[Arrival] = []
    for t in poisson_times(rate, rng, duration=duration, start=start):
        model = models(rng)
        p, o = tokens(rng)
        out.append(Arrival(t, model, p, o, tenant, weight, priority))
    return out


def replay(
    rows: Sequence[TraceRow],
    *,
    models: ModelPicker,
    seed: int = 0,
    prompt_scale: float = 1.0,
    output_scale: float = 1.0,
    keep_prefix: bool = True,
    tenant: str = "",
    weight: float = 1.0,
) -> list[Arrival]:
    """A trace's own arrival times and sizes; the model is picked per row.

    Sizes are scaled (rounded, at least 1); the prefix ids are kept as they are, see
    the module docstring for what a block then stands for.
    """
    rng = random.Random(seed)
    return [
        Arrival(
            t=row.t,
            model=models(rng),
            prompt_tokens=_scaled(row.prompt_tokens, prompt_scale),
            output_tokens=_scaled(row.output_tokens, output_scale),
            tenant=tenant,
            weight=weight,
            prefix=row.prefix if keep_prefix else (),
        )
        for row in rows
    ]


def shared_prefix_workload(
    *,
    groups: int,
    prefix_blocks: int,
    suffix_blocks: int,
    block_tokens: int,
    rate: float,
    duration: float,
    model: str,
    mean_output: float,
    seed: int,
    group_exponent: float = 0.0,
    group_sessions: bool = False,
    id_base: int = 1 << 40,
) -> list[Arrival]:
    """Poisson arrivals in ``groups``, each request = its group's prefix + its own suffix.

    The prompt is ``(prefix_blocks + suffix_blocks) * block_tokens`` tokens. Group ids
    live from ``id_base`` (clear of the Mooncake ids), suffix ids after them, so no two
    requests share a suffix block. ``group_exponent`` is the Zipf skew of group
    popularity (0 = uniform); ``group_sessions`` tags each request with its group as
    the session (for sticky policies).
    """
    if groups < 1 or prefix_blocks < 0 or suffix_blocks < 0 or block_tokens < 1:
        raise ValueError("groups and block_tokens must be >= 1, block counts >= 0")
    rng = random.Random(seed)
    name = normalize_name(model)
    group_cum = _cumulative(zipf_weights(groups, group_exponent))
    next_id = id_base + groups * prefix_blocks
    prompt = (prefix_blocks + suffix_blocks) * block_tokens
    sizes = lognormal_tokens(prompt, mean_output, sigma=0.6, max_output=8 * round(mean_output))
    out: list[Arrival] = []
    for t in poisson_times(rate, rng, duration=duration):
        g = rng.choices(range(groups), cum_weights=group_cum)[0]
        head = tuple(range(id_base + g * prefix_blocks, id_base + (g + 1) * prefix_blocks))
        tail = tuple(range(next_id, next_id + suffix_blocks))
        next_id += suffix_blocks
        _, output = sizes(rng)
        session = f"group-{g}" if group_sessions else None
        out.append(Arrival(t, name, prompt, output, prefix=head + tail, session=session))
    return out


@dataclass(frozen=True, slots=True)
class TenantLoad:
    """One tenant in one phase: Poisson at ``rate`` over ``[start, end)``, and/or a
    ``backlog`` of requests all arriving at ``start`` (a few microseconds apart)."""

    tenant: str
    weight: float = 1.0
    rate: float = 0.0
    backlog: int = 0
    start: float = 0.0
    end: float = math.inf
    priority: int = 0


_BACKLOG_GAP = 1e-6  # seconds between backlog arrivals: keeps tenants interleaved


def tenant_workload(
    loads: Iterable[TenantLoad], *, models: ModelPicker, tokens: TokenSampler, seed: int
) -> list[Arrival]:
    """Arrivals of several tenants over phases; several loads may name one tenant."""
    streams: list[list[Arrival]] = []
    for i, load in enumerate(loads):
        rng = random.Random(f"{seed}:{i}:{load.tenant}")
        times = [load.start + n * _BACKLOG_GAP for n in range(load.backlog)]
        if load.rate > 0:
            if math.isinf(load.end):
                raise ValueError(f"tenant {load.tenant!r}: a rate needs a finite end")
            times += poisson_times(load.rate, rng, duration=load.end - load.start, start=load.start)
        stream = []
        for t in times:
            model = models(rng)
            p, o = tokens(rng)
            stream.append(Arrival(t, model, p, o, load.tenant, load.weight, load.priority))
        streams.append(stream)
    return merge(*streams)


# --- fitting a stream to a fleet -----------------------------------------------------


def merge(*streams: Iterable[Arrival]) -> list[Arrival]:
    """One stream sorted by time; ties keep the order of the arguments."""
    return sorted(chain.from_iterable(streams), key=lambda a: a.t)


def rescale(arrivals: Iterable[Arrival], factor: float) -> list[Arrival]:
    """Multiply every arrival time by ``factor``: 2 stretches (half the rate), 0.5
    compresses (double the rate)."""
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    return [replace(a, t=a.t * factor) for a in arrivals]


def scale_tokens(
    arrivals: Iterable[Arrival], prompt_factor: float, output_factor: float | None = None
) -> list[Arrival]:
    """Scale sizes (rounded, at least 1); ``output_factor`` defaults to ``prompt_factor``.

    Prefix ids stay: each block then stands for ``prompt_factor`` times its tokens.
    """
    of = prompt_factor if output_factor is None else output_factor
    return [
        replace(
            a,
            prompt_tokens=_scaled(a.prompt_tokens, prompt_factor),
            output_tokens=_scaled(a.output_tokens, of),
        )
        for a in arrivals
    ]


def engine_prefix(
    prefix: Sequence[int], block_tokens: int, engine_block_size: int
) -> tuple[int, ...]:
    """Split each ``block_tokens`` block id into ``block_tokens // engine_block_size``
    ids an engine with that block size can chain (block ``h`` part ``j`` is
    ``h * k + j``, unique as long as the input ids are)."""
    if block_tokens == engine_block_size:
        return tuple(prefix)
    if block_tokens % engine_block_size:
        raise ValueError(f"{block_tokens}-token blocks do not split into {engine_block_size}")
    k = block_tokens // engine_block_size
    return tuple(h * k + j for h in prefix for j in range(k))


def offered_load(arrivals: Sequence[Arrival], measure: LoadMeasure = "requests") -> float:
    """Mean offered load per second over the stream's span (first to last arrival):
    requests, tokens (prompt + output) or output tokens."""
    if len(arrivals) < 2:
        raise ValueError("need at least two arrivals to measure a rate")
    span = max(a.t for a in arrivals) - min(a.t for a in arrivals)
    if span <= 0:
        raise ValueError("all arrivals at one instant: no rate")
    if measure == "requests":
        total = float(len(arrivals))
    elif measure == "tokens":
        total = float(sum(a.prompt_tokens + a.output_tokens for a in arrivals))
    else:
        total = float(sum(a.output_tokens for a in arrivals))
    return total / span


def factor_for_load(
    arrivals: Sequence[Arrival],
    capacity: float,
    target: float = 1.0,
    measure: LoadMeasure = "requests",
) -> float:
    """The :func:`rescale` factor after which the offered load is ``target * capacity``
    (capacity in the unit of ``measure`` per second, e.g. fleet output tokens/s)."""
    if capacity <= 0 or target <= 0:
        raise ValueError("capacity and target must be positive")
    return offered_load(arrivals, measure) / (target * capacity)
