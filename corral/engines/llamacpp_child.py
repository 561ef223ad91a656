"""The engine process itself: what ``python -m corral.engines.llamacpp`` runs.

It builds llama.cpp's server from the command line, tells the launcher its port
through a ready file, and serves until SIGTERM or SIGINT (or until its launcher dies,
with ``--exit-with-parent``). ``xllamacpp`` is imported here only, so the launcher
stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["main"]


class _Stop(Exception):
    """Raised in the child's main thread by SIGTERM/SIGINT."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _install_stop_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise_stop)


def _build_params(args: argparse.Namespace) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(args.model)
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx if args.ctx is not None else 512 * args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.embedding = args.embedding
    # Always set: left empty, llama.cpp names the model by its file name or its whole
    # path depending on the release.
    params.model_alias = {args.alias or Path(args.model).stem}
    return params


def _watch_parent(parent: int) -> None:
    """End this engine when the process that started it is gone (even by SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _write_ready_file(path: Path, facts: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**facts, "pid": os.getpid()}))
    # The rename makes the file appear whole: the parent never reads half of it.
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m corral.engines.llamacpp",
        description="Serve one GGUF model with llama.cpp's HTTP server on 127.0.0.1.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", type=Path, help="GGUF model file")
    model.add_argument(
        "--tiny", action="store_true", help="serve Corral's tiny test model (written once)"
    )
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--parallel", type=int, default=2, help="concurrent slots")
    parser.add_argument(
        "--ctx", type=int, default=None, help="KV cache size (default 512 x parallel)"
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for inference")
    parser.add_argument("--embedding", action="store_true", help="serve /v1/embeddings")
    parser.add_argument(
        "--alias", default=None, help="model id listed by /v1/models (default: file stem)"
    )
    # Private to the launcher: how the child reports its port, and its leash.
    parser.add_argument("--ready-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.tiny:
        from corral.engines.tinymodel import cached_tiny_model

        args.model = cached_tiny_model()
        args.alias = args.alias or "tiny-llama"
    if args.exit_with_parent:
        _watch_parent(os.getppid())
    _install_stop_handlers()
    import xllamacpp

    began = time.perf_counter()
    try:
        server = xllamacpp.Server(_build_params(args))
    except _Stop:
        return 0
    except RuntimeError as exc:
        print(f"llama.cpp failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    # Some llama.cpp builds install their own SIGTERM/SIGINT handlers while starting,
    # which stop its loop but would leave this thread waiting forever: ours go back on.
    _install_stop_handlers()
    load_s = time.perf_counter() - began
    try:
        url = str(server.listening_address).rstrip("/")
        port = int(url.rsplit(":", 1)[1])
        print(f"llama.cpp serving {args.model} at {url} (loaded in {load_s:.3f} s)", flush=True)
        if args.ready_file is not None:
            _write_ready_file(args.ready_file, {"url": url, "port": port, "load_s": load_s})
        while True:
            signal.pause()
    except _Stop:
        pass
    finally:
        # Dropping the server stops llama.cpp's loop and joins its threads.
        del server
    return 0
