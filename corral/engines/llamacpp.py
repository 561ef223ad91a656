"""llama.cpp's own HTTP server (from the ``xllamacpp`` wheel) in a child process.

``xllamacpp.Server`` serves from threads of the process that builds it and cannot be
stopped from outside except by ending that process, so each engine gets its own::

    with start_llamacpp(cached_tiny_model(), parallel=2, alias="tiny-llama") as engine:
        engine.url            # "http://127.0.0.1:41234", already answering /health

    engine = await start_llamacpp_async(path, embedding=True)
    await engine.astop()

By hand (the launcher runs exactly this)::

    python -m corral.engines.llamacpp --model PATH --port 8080 --parallel 2 --alias tiny-llama
    python -m corral.engines.llamacpp --tiny --port 8080      # writes the tiny model first

The child (``corral.engines.llamacpp_child``) stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from corral.engines.llamacpp_child import main

__all__ = [
    "EngineStartError",
    "LlamaCppServer",
    "llamacpp_command",
    "main",
    "start_llamacpp",
    "start_llamacpp_async",
]

HOST = "127.0.0.1"
_P = ParamSpec("_P")
_T = TypeVar("_T")
_LOG_TAIL_LINES = 40


class EngineStartError(RuntimeError):
    """The engine died or did not become healthy in time; the message ends with its log."""


# ---------------------------------------------------------------- parent side


class LlamaCppServer:
    """A running llama.cpp child: its URL, its process, and its log."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        *,
        model_path: Path,
        alias: str | None,
        log_path: Path,
        workdir: Path | None,
    ) -> None:
        self.process = process
        self.port = port
        self.host = HOST
        self.model_path = model_path
        self.alias = alias
        self.log_path = log_path
        self._workdir = workdir
        self._stopped = False
        # Seconds llama.cpp took to build the server and load the model (from the child).
        self.load_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def model_id(self) -> str:
        """The id ``/v1/models`` lists (and the ``model`` every answer names)."""
        return self.alias or self.model_path.stem

    def log_text(self) -> str:
        """Everything the child has printed so far (llama.cpp logs to stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code. Idempotent."""
        if self._stopped:
            return self.process.returncode
        self._stopped = True
        try:
            _end_process(self.process, timeout)
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
        return self.process.returncode

    async def astop(self, timeout: float = 10.0) -> int | None:
        return await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> LlamaCppServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LlamaCppServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"pid {self.pid}"
        return f"LlamaCppServer({self.url}, {self.model_id!r}, {state})"


def llamacpp_command(
    model_path: Path,
    *,
    port: int = 0,
    parallel: int = 2,
    ctx: int | None = None,
    threads: int = 1,
    embedding: bool = False,
    alias: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The child's command line (what ``start_llamacpp`` runs, less its private flags)."""
    cmd = [python, "-m", "corral.engines.llamacpp", "--model", str(model_path)]
    cmd += ["--port", str(port), "--parallel", str(parallel)]
    cmd += ["--ctx", str(ctx if ctx is not None else 512 * parallel), "--threads", str(threads)]
    if embedding:
        cmd.append("--embedding")
    if alias:
        cmd += ["--alias", alias]
    return cmd


def start_llamacpp(
    model_path: Path | str,
    *,
    port: int = 0,
    parallel: int = 2,
    ctx: int | None = None,
    threads: int = 1,
    embedding: bool = False,
    alias: str | None = None,
    ready_timeout: float = 30.0,
    log_path: Path | None = None,
) -> LlamaCppServer:
    """Start an engine and return once ``GET /health`` answers 200.

    ``port=0`` lets the child bind any free port (no race with other processes) and
    report it back. ``ctx`` is the whole KV cache, shared by the ``parallel`` slots,
    so the default gives each slot 512 tokens. ``alias`` is the model's id in
    ``/v1/models``; it defaults to the file's stem. The log goes to ``log_path``, or to a
    temporary file removed on stop. Raises ``EngineStartError`` with the log's tail.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"no model file at {model_path}")
    workdir = Path(tempfile.mkdtemp(prefix="corral-llamacpp-"))
    log_path = log_path or workdir / "engine.log"
    ready_file = workdir / "ready.json"
    cmd = llamacpp_command(
        model_path,
        port=port,
        parallel=parallel,
        ctx=ctx,
        threads=threads,
        embedding=embedding,
        alias=alias,
    )
    cmd += ["--ready-file", str(ready_file), "--exit-with-parent"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    server = LlamaCppServer(
        process, port, model_path=model_path, alias=alias, log_path=log_path, workdir=workdir
    )
    try:
        server.port = _wait_ready(server, ready_file, time.monotonic() + ready_timeout)
    except BaseException:
        server.stop(timeout=2.0)
        raise
    return server


def _off_the_loop(
    fn: Callable[_P, _T], name: str, doc: str
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """``fn`` as a coroutine function that runs it in a worker thread."""

    @functools.wraps(fn)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    return run


start_llamacpp_async = _off_the_loop(
    start_llamacpp,
    "start_llamacpp_async",
    "``start_llamacpp`` without blocking the event loop while the child starts.",
)


def _wait_ready(server: LlamaCppServer, ready_file: Path, deadline: float) -> int:
    """Wait for the child's ready file, then for ``/health`` 200; return the port."""
    port: int | None = None
    delay = 0.005
    while True:
        code = server.process.poll()
        if code is not None:
            raise EngineStartError(_failure(server, f"exited with code {code} while starting"))
        if port is None and ready_file.is_file():
            facts = json.loads(ready_file.read_text())
            port = server.port = int(facts["port"])
            server.load_seconds = float(facts["load_s"])
        if port is not None and _health_status(port) == 200:
            return port
        if time.monotonic() >= deadline:
            raise EngineStartError(_failure(server, "did not become healthy in time"))
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _health_status(port: int) -> int | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=2.0)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def _failure(server: LlamaCppServer, what: str) -> str:
    lines = server.log_text().splitlines()[-_LOG_TAIL_LINES:]
    tail = "\n".join(f"  | {line}" for line in lines) or "  | (no output)"
    return f"llama.cpp engine for {server.model_path} {what}; its output:\n{tail}"


def _end_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    # Always reap, so no zombie and no ResourceWarning outlive the handle.
    process.wait()


if __name__ == "__main__":
    sys.exit(main())
