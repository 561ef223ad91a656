"""Plain data of the node model: configuration, requests, events, snapshots.

Kept apart from :mod:`corral.sim.model` (which re-exports all of it) so the behaviour
reads in one sitting; nothing here has logic beyond field defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "FOREVER",
    "Admission",
    "Event",
    "EventKind",
    "Kind",
    "Metrics",
    "NoPrefixCache",
    "NodeConfig",
    "NodeStats",
    "PrefixCache",
    "ReqId",
    "Request",
    "RunnerInfo",
    "VllmConfig",
    "VllmStats",
]

FOREVER = math.inf

ReqId = int | str


class Kind(StrEnum):
    GENERATE = "generate"
    CHAT = "chat"
    EMBED = "embed"
    LOAD = "load"  # empty prompt: only make the model resident
    UNLOAD = "unload"  # empty prompt with keep_alive 0


class Admission(StrEnum):
    RUNNING = "running"  # holds a slot now
    QUEUED = "queued"  # waits for a slot of a resident (or loading) runner
    LOADING = "loading"  # waits in the scheduler queue for its model to load
    BUSY = "busy"  # scheduler queue full: Ollama's 503
    NOT_FOUND = "not_found"  # model not present on disk
    DONE = "done"  # answered at once (unload); its DONE event follows
    REJECTED = "rejected"  # vLLM: longer than max_model_len, never scheduled


class EventKind(StrEnum):
    FIRST_TOKEN = "first_token"
    TOKENS = "tokens"  # every `token_chunk` tokens, when token_chunk > 0
    DONE = "done"
    LOAD_STARTED = "load_started"
    LOADED = "loaded"
    UNLOADED = "unloaded"
    PREEMPTED = "preempted"  # vLLM: blocks taken back; the sequence is recomputed later


@dataclass(frozen=True, slots=True)
class NodeConfig:
    num_parallel: int = 1
    max_loaded_models: int = 3  # 0 = no count limit, VRAM only
    vram_bytes: int = 24 * 1024**3
    max_queue: int = 512
    keep_alive: float = 300.0  # seconds; FOREVER never expires; 0 unloads when idle
    default_num_ctx: int = 4096
    load_base_s: float = 1.0  # process start + graph allocation
    load_bytes_per_s: float = 0.5e9  # weight read + upload
    unload_s: float = 0.1
    speed: float = 1.0  # >1 runs loads and tokens faster; keep-alive is not scaled
    zero_delay: bool = False  # every duration 0 (benchmarks)
    token_chunk: int = 1  # TOKENS event every N tokens; 0 = only FIRST_TOKEN and DONE
    concurrency_exponent: float = 0.65
    cpu_slowdown: float = 8.0  # layers that do not fit in VRAM run this much slower
    jitter: float = 0.05  # +- fraction on load times and per-request rates (seeded)
    seed: int = 0


@dataclass(frozen=True, slots=True)
class VllmConfig:
    """One vLLM server: its engine limits (``vllm serve`` flags) and the simulator's knobs."""

    max_num_seqs: int = 256  # sequences in the running batch
    max_num_batched_tokens: int = 8192  # tokens per engine step (chunked prefill budget)
    max_model_len: int | None = None  # None: the model's context length
    kv_cache_tokens: int = 262144  # KV cache capacity; blocks = tokens // block_size
    block_size: int = 16
    enable_prefix_caching: bool = True
    batch_slowdown: float = 0.015  # step time grows by this fraction per extra decoding seq
    speed: float = 1.0
    zero_delay: bool = False
    token_chunk: int = 1  # TOKENS event every N tokens; 0 = only FIRST_TOKEN and DONE
    jitter: float = 0.05  # +- fraction on the node's rates (one seeded draw per node)
    seed: int = 0


@dataclass(slots=True)
class VllmStats:
    """Counters of one vLLM engine; the exported ones mirror ``vllm:*_total``."""

    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    rejected: int = 0
    preemptions: int = 0
    prefix_queries: int = 0  # prompt tokens looked up by first-time requests
    prefix_hits: int = 0  # of those, tokens found in the cache
    preempted_queries: int = 0  # re-lookups of preempted requests (not exported)
    preempted_hits: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    evicted_blocks: int = 0  # cached blocks reused for other data
    steps: int = 0  # engine steps (a run of identical decode steps counts each one)


@dataclass(frozen=True, slots=True)
class Request:
    req_id: ReqId
    model: str
    kind: Kind = Kind.GENERATE
    prompt_tokens: int = 1
    output_tokens: int = 0
    keep_alive: float | None = None  # None keeps the runner's current keep-alive
    num_ctx: int | None = None
    done_reason: str = "stop"  # "length" when output_tokens was capped by num_predict
    prefix_hashes: tuple[int, ...] = ()  # prompt block hashes, for a PrefixCache
    prompt_ids: tuple[int, ...] = ()  # prompt token ids (vLLM hashes them when no prefix_hashes)


@dataclass(frozen=True, slots=True)
class Metrics:
    """Seconds (the wire format multiplies by 1e9)."""

    total_duration: float
    load_duration: float
    prompt_eval_count: int
    prompt_eval_duration: float
    eval_count: int
    eval_duration: float
    cached_tokens: int = 0  # vLLM: prompt tokens served by the prefix cache


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    kind: EventKind
    model: str
    req_id: ReqId | None = None
    tokens: int = 0  # output tokens produced so far
    metrics: Metrics | None = None
    done_reason: str = ""


@dataclass(frozen=True, slots=True)
class RunnerInfo:
    model: str
    state: str  # "loading" | "ready"
    num_ctx: int
    size_bytes: int
    size_vram: int
    keep_alive: float
    expires_at: float  # FOREVER when it never expires
    active: int
    waiting: int


@dataclass(slots=True)
class NodeStats:
    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    busy: int = 0
    not_found: int = 0
    loads: int = 0
    unloads: int = 0
    evictions: int = 0


class PrefixCache(Protocol):
    """Where a prompt cache plugs in: how much of a prompt needs no evaluation."""

    def cached_tokens(self, model: str, req: Request) -> int: ...

    def on_prompt_done(self, model: str, req: Request) -> None: ...

    def on_unload(self, model: str) -> None: ...


class NoPrefixCache:
    def cached_tokens(self, model: str, req: Request) -> int:
        return 0

    def on_prompt_done(self, model: str, req: Request) -> None:
        return None

    def on_unload(self, model: str) -> None:
        return None
