"""``corral sim``: run simulated Ollama nodes (or vLLM servers) on local ports.

:func:`sim` is a plain function whose parameters carry Typer options, so the gateway's
CLI can register it as a command (``app.command("sim")(sim)``);
``python -m corral.sim`` runs it on its own.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import typer

from corral.sim.catalogue import Catalogue
from corral.sim.faults import Faults
from corral.sim.launch import NodeSpec, SimNode, VllmNode, VllmSpec, start_nodes, stop_nodes
from corral.sim.model import NodeConfig
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_catalogue import served_spec
from corral.sim.wire import BadRequest, parse_keep_alive

__all__ = ["build_specs", "build_vllm_specs", "parse_cli_keep_alive", "serve", "sim"]

DIALECTS = ("ollama", "vllm")
DEFAULT_MODELS = {"ollama": "llama3.2:1b,qwen2.5:7b", "vllm": "Qwen/Qwen2.5-7B-Instruct"}


def parse_cli_keep_alive(text: str) -> float:
    """Like OLLAMA_KEEP_ALIVE: plain numbers are seconds, else a Go duration; <0 = forever."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            value = parse_keep_alive(text)
        except BadRequest as exc:
            raise typer.BadParameter(str(exc)) from None
        return 300.0 if value is None else value
    return math.inf if seconds < 0 else seconds


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def build_specs(
    *,
    port: int = 11500,
    host: str = "127.0.0.1",
    models: str = "llama3.2:1b,qwen2.5:7b",
    nodes: int = 1,
    catalogue: Path | None = None,
    zero_delay: bool = False,
    speed: float = 1.0,
    seed: int = 0,
    num_parallel: int = 1,
    max_loaded_models: int = 3,
    vram_gb: float = 24.0,
    max_queue: int = 512,
    keep_alive: str = "5m",
    loaded: str = "",
    faults: Faults | None = None,
) -> list[NodeSpec]:
    """The node specs the command line describes (N nodes on consecutive ports)."""
    if nodes < 1:
        raise typer.BadParameter("--nodes must be at least 1")
    cat = Catalogue.load(catalogue)
    config = NodeConfig(
        num_parallel=num_parallel,
        max_loaded_models=max_loaded_models,
        vram_bytes=int(vram_gb * 1024**3),
        max_queue=max_queue,
        keep_alive=parse_cli_keep_alive(keep_alive),
        speed=speed,
        zero_delay=zero_delay,
        token_chunk=_token_chunk(zero_delay),
        seed=seed,
    )
    spec = NodeSpec(
        host=host,
        models=tuple(_names(models)),
        loaded=tuple(_names(loaded)),
        config=config,
        faults=faults or Faults(),
        catalogue=cat,
    )
    return _numbered(spec, nodes, port)


def build_vllm_specs(
    *,
    port: int = 11500,
    host: str = "127.0.0.1",
    models: str = DEFAULT_MODELS["vllm"],
    nodes: int = 1,
    catalogue: Path | None = None,
    zero_delay: bool = False,
    speed: float = 1.0,
    seed: int = 0,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
    max_model_len: int | None = None,
    kv_cache_tokens: int = 262144,
    prefix_caching: bool = True,
    faults: Faults | None = None,
) -> list[VllmSpec]:
    """vLLM server specs: N servers on consecutive ports, one model each.

    ``models`` names one model for every server, or exactly one per server.
    """
    if nodes < 1:
        raise typer.BadParameter("--nodes must be at least 1")
    names = _names(models)
    if len(names) not in (1, nodes):
        raise typer.BadParameter(
            f"--models for vLLM names one model, or one per node ({nodes}); got {len(names)}"
        )
    if min(max_num_seqs, max_num_batched_tokens, kv_cache_tokens) < 1:
        raise typer.BadParameter("--max-num-seqs, --max-num-batched-tokens, --kv-cache-tokens > 0")
    cat = Catalogue.load(catalogue) if catalogue is not None else None
    for name in names:
        # vLLM refuses to start when one max_model_len sequence cannot fit in the cache.
        need = max_model_len or served_spec(name, cat).context_length
        if need > kv_cache_tokens:
            raise typer.BadParameter(
                f"max_model_len {need} of {name} needs more KV cache than --kv-cache-tokens "
                f"{kv_cache_tokens} holds; lower --max-model-len or raise --kv-cache-tokens"
            )
    config = VllmConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_model_len,
        kv_cache_tokens=kv_cache_tokens,
        enable_prefix_caching=prefix_caching,
        speed=speed,
        zero_delay=zero_delay,
        token_chunk=_token_chunk(zero_delay),
        seed=seed,
    )
    spec = VllmSpec(
        host=host, model=names[0], config=config, faults=faults or Faults(), catalogue=cat
    )
    specs = _numbered(spec, nodes, port)
    if len(names) == nodes:
        specs = [replace(s, model=name) for s, name in zip(specs, names, strict=True)]
    return specs


def _token_chunk(zero_delay: bool) -> int:
    # Live streaming wants per-token events; zero-delay answers all at once.
    return 0 if zero_delay else 1


_Spec = TypeVar("_Spec", NodeSpec, VllmSpec)


def _numbered(spec: _Spec, nodes: int, port: int) -> list[_Spec]:
    """``nodes`` copies of ``spec``: node i is ``node{i}``, on ``port + i`` (0: any
    port), seeded ``seed + i``."""
    return [
        replace(
            spec,
            port=port + i if port else 0,
            name=f"node{i}",
            config=replace(spec.config, seed=spec.config.seed + i),
        )
        for i in range(nodes)
    ]


def _describe(node: SimNode | VllmNode) -> str:
    if isinstance(node, VllmNode):
        m = node.model
        return (
            f"corral sim: {node.name} {node.url} dialect=vllm model={m.spec.name} "
            f"max_model_len={m.max_model_len} max_num_seqs={m.config.max_num_seqs}"
        )
    present = ",".join(s.name for s in node.model.present()) or "-"
    loaded = ",".join(r.model for r in node.model.runners(node.runtime.now())) or "-"
    return f"corral sim: {node.name} {node.url} models={present} loaded={loaded}"


async def serve(specs: Sequence[NodeSpec | VllmSpec], stop: asyncio.Event | None = None) -> None:
    """Run the nodes until ``stop`` is set (or SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    nodes = await start_nodes(specs)
    try:
        for node in nodes:
            print(_describe(node), flush=True)
        await stop.wait()
    finally:
        await stop_nodes(nodes)


def sim(
    dialect: str = typer.Option(
        "ollama", "--dialect", help="Which server to simulate: ollama (default) or vllm."
    ),
    port: int = typer.Option(
        11500, "--port", help="Port of the first node; more nodes take the next ones. 0 = any."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    models: str | None = typer.Option(
        None,
        "--models",
        help="Ollama: models present on each node, comma-separated (default "
        "llama3.2:1b,qwen2.5:7b). vLLM: the served model, or one per node (default "
        "Qwen/Qwen2.5-7B-Instruct). Any name works: sizes are guessed from it (:7b, -13b).",
    ),
    nodes: int = typer.Option(1, "--nodes", help="How many nodes to run (consecutive ports)."),
    catalogue: Path | None = typer.Option(  # noqa: B008 -- Typer reads its options here
        None, "--catalogue", help="YAML file of model specs laid over the built-in catalogue."
    ),
    zero_delay: bool = typer.Option(
        False, "--zero-delay", help="Every load and token takes no time (benchmarks)."
    ),
    speed: float = typer.Option(
        1.0, "--speed", help="Run loads and generation this many times faster than real."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of rates jitter and faults (node i: +i)."),
    num_parallel: int = typer.Option(
        1, "--num-parallel", help="Requests served at once per loaded model (OLLAMA_NUM_PARALLEL)."
    ),
    max_loaded_models: int = typer.Option(
        3, "--max-loaded-models", help="Models resident at once (OLLAMA_MAX_LOADED_MODELS)."
    ),
    vram_gb: float = typer.Option(24.0, "--vram-gb", help="VRAM budget of each node, GiB."),
    max_queue: int = typer.Option(
        512, "--max-queue", help="Requests that may wait for a model load (OLLAMA_MAX_QUEUE)."
    ),
    keep_alive: str = typer.Option(
        "5m", "--keep-alive", help="Default keep-alive: 5m, 1h, seconds; negative = forever."
    ),
    loaded: str = typer.Option(
        "", "--loaded", help="Models resident from the start, comma-separated."
    ),
    error_rate: float = typer.Option(
        0.0, "--error-rate", help="Fraction of inference requests answered 500."
    ),
    error_mid_stream: float = typer.Option(
        0.0, "--error-mid-stream", help="Fraction of answers ending in an NDJSON error line."
    ),
    hang: bool = typer.Option(False, "--hang", help="Accept every request and never answer it."),
    slow: float = typer.Option(1.0, "--slow", help="Multiplier on load and token durations."),
    drop_mid_stream: float = typer.Option(
        0.0, "--drop-mid-stream", help="Fraction of answers whose connection is cut midway."
    ),
    malformed_json: float = typer.Option(
        0.0, "--malformed-json", help="Fraction of answers with one broken JSON chunk."
    ),
    busy: bool = typer.Option(
        False, "--busy", help='Answer every inference request 503 "server busy".'
    ),
    pull_error: float = typer.Option(
        0.0, "--pull-error", help="Fraction of pulls that fail partway with an error line."
    ),
    no_usage: bool = typer.Option(
        False, "--no-usage", help="Answer without token counts (as some engines do)."
    ),
    max_num_seqs: int = typer.Option(
        256, "--max-num-seqs", help="vLLM: sequences in the running batch; more wait."
    ),
    max_num_batched_tokens: int = typer.Option(
        8192, "--max-num-batched-tokens", help="vLLM: tokens per engine step (prefill chunk)."
    ),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help="vLLM: context length; longer requests get 400."
    ),
    kv_cache_tokens: int = typer.Option(
        262144, "--kv-cache-tokens", help="vLLM: KV cache capacity in tokens (16-token blocks)."
    ),
    prefix_caching: bool = typer.Option(
        True, "--prefix-caching/--no-prefix-caching", help="vLLM: automatic prefix caching."
    ),
) -> None:
    """Run simulated Ollama nodes or vLLM servers (scheduling, caches, faults) on local ports."""
    if dialect not in DIALECTS:
        raise typer.BadParameter(f"--dialect must be one of {', '.join(DIALECTS)}")
    try:
        faults = Faults().updated(
            {
                "error_rate": error_rate,
                "error_mid_stream": error_mid_stream,
                "hang": hang,
                "slow": slow,
                "drop_mid_stream": drop_mid_stream,
                "malformed_json": malformed_json,
                "busy": busy,
                "pull_error": pull_error,
                "no_usage": no_usage,
            }
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    specs: Sequence[NodeSpec | VllmSpec]
    if dialect == "vllm":
        specs = build_vllm_specs(
            port=port,
            host=host,
            models=models or DEFAULT_MODELS["vllm"],
            nodes=nodes,
            catalogue=catalogue,
            zero_delay=zero_delay,
            speed=speed,
            seed=seed,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
            kv_cache_tokens=kv_cache_tokens,
            prefix_caching=prefix_caching,
            faults=faults,
        )
    else:
        specs = build_specs(
            port=port,
            host=host,
            models=models or DEFAULT_MODELS["ollama"],
            nodes=nodes,
            catalogue=catalogue,
            zero_delay=zero_delay,
            speed=speed,
            seed=seed,
            num_parallel=num_parallel,
            max_loaded_models=max_loaded_models,
            vram_gb=vram_gb,
            max_queue=max_queue,
            keep_alive=keep_alive,
            loaded=loaded,
            faults=faults,
        )
    asyncio.run(serve(specs))
