"""The ``process`` provider: each worker is a local command (``ollama serve``, a
llama.cpp server, ``corral sim``) started from a template.

Every worker runs in a session (process group) of its own, so stopping it reaches
whatever its command started too (a shell wrapper's children). On Linux each is
also told to receive SIGTERM when the gateway dies, even by SIGKILL, so a crashed
gateway leaves no engines running. Its output (stdout and stderr) is kept in a
bounded ring of lines for the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shlex
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from corral.adapters.workers.base import Launch, WorkerHandle, WorkerStartError
from corral.config.workers import fill_template

__all__ = ["ProcessProvider", "ProcessWorker"]

log = logging.getLogger("corral.workers")

_LOG_LINES = 400
_READ_CHUNK = 65536
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ProcessWorker:
    """One worker process, its command line and the tail of its output."""

    def __init__(self, launch: Launch, argv: list[str], process: asyncio.subprocess.Process):
        self._launch = launch
        self.argv = argv
        self.process = process
        self.lines: deque[str] = deque(maxlen=_LOG_LINES)
        self._partial = b""
        self.stopping = False
        assert process.stdout is not None
        self._reader = asyncio.create_task(self._read(process.stdout), name=f"log-{launch.id}")

    @property
    def launch(self) -> Launch:
        return self._launch

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        return self.process.returncode

    async def _read(self, stream: asyncio.StreamReader) -> None:
        # Chunks, not readline: one over-long line must not stop the reading (a full
        # pipe would block the engine).
        while chunk := await stream.read(_READ_CHUNK):
            *done, self._partial = (self._partial + chunk).split(b"\n")
            self.lines.extend(line.decode("utf-8", "replace").rstrip("\r") for line in done)
            if len(self._partial) > _READ_CHUNK:
                self.lines.append(self._partial.decode("utf-8", "replace"))
                self._partial = b""
        if self._partial:
            self.lines.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group is the worker's session, led by the process we started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    async def ended(self) -> int:
        """Wait for the process to end; then end what it left behind in its group."""
        code = await self.process.wait()
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            # The reader ends when the last writer of the pipe is gone.
            await asyncio.wait_for(asyncio.shield(self._reader), 5.0)
        return code

    async def stop(self, timeout: float) -> int | None:
        self.stopping = True
        if self.process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout)
            except TimeoutError:
                log.warning("worker %s ignored SIGTERM for %gs: killed", self._launch.id, timeout)
                self._signal_group(signal.SIGKILL)
        return await self.ended()

    def tail(self, lines: int) -> list[str]:
        if lines <= 0:
            return []
        return list(self.lines)[-lines:]

    def __repr__(self) -> str:
        return f"ProcessWorker({self._launch.id}, pid {self.pid}, exit {self.exit_code})"


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the leash was on
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


class ProcessProvider:
    """Starts workers from a command template and environment templates."""

    name = "process"

    def __init__(
        self,
        command: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        base_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError("the worker command is empty")
        self.env = dict(env or {})
        self._base_env = base_env
        self._python = python

    def _values(self, launch: Launch) -> dict[str, str]:
        return {
            "port": str(launch.port),
            "gpu": launch.gpu or "",
            "id": launch.id,
            "host": launch.host,
            "python": self._python,
        }

    def command_for(self, launch: Launch) -> tuple[list[str], dict[str, str]]:
        """The argument list and the whole environment one worker is started with."""
        values = self._values(launch)
        argv = [fill_template(arg, values) for arg in self.argv]
        env = dict(os.environ if self._base_env is None else self._base_env)
        env.update({k: fill_template(v, values) for k, v in self.env.items()})
        return argv, env

    async def start(self, launch: Launch) -> ProcessWorker:
        argv, env = self.command_for(launch)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except FileNotFoundError:
            raise WorkerStartError(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise WorkerStartError(f"command not executable: {argv[0]}") from None
        except OSError as exc:
            raise WorkerStartError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        log.info("worker %s started: pid %d, %s", launch.id, process.pid, shlex.join(argv))
        return ProcessWorker(launch, argv, process)

    async def stop(self, handle: WorkerHandle, timeout: float) -> int | None:
        return await _own(handle).stop(timeout)

    async def wait(self, handle: WorkerHandle) -> int | None:
        return await _own(handle).ended()

    def alive(self, handle: WorkerHandle) -> bool:
        return _own(handle).process.returncode is None

    def log_tail(self, handle: WorkerHandle, lines: int = 50) -> list[str]:
        return _own(handle).tail(lines)


def _own(handle: WorkerHandle) -> ProcessWorker:
    if not isinstance(handle, ProcessWorker):
        raise TypeError(f"not a process worker: {handle!r}")
    return handle
