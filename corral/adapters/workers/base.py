"""What a worker provider does: start an engine on a port (and GPU), stop it, watch it.

A provider is a small protocol so that other ways of starting engines (containers,
cluster pods) can sit beside the local ``process`` one; only providers that can be
tested against a real engine are shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Launch", "WorkerHandle", "WorkerProvider", "WorkerStartError"]


class WorkerStartError(RuntimeError):
    """A worker could not be started or did not become ready; the message says why."""


@dataclass(frozen=True, slots=True)
class Launch:
    """What one worker is started with (the values of the command's placeholders)."""

    id: str
    host: str
    port: int
    gpu: str | None = None


class WorkerHandle(Protocol):
    """A started worker, as its provider knows it."""

    @property
    def launch(self) -> Launch: ...

    @property
    def pid(self) -> int | None:
        """The operating-system process id, where there is one."""
        ...

    @property
    def exit_code(self) -> int | None:
        """None while it runs."""
        ...


class WorkerProvider(Protocol):
    name: str

    async def start(self, launch: Launch) -> WorkerHandle:
        """Start one worker (not yet ready: the caller waits for its engine).

        Raises `WorkerStartError` when it cannot even be started.
        """
        ...

    async def stop(self, handle: WorkerHandle, timeout: float) -> int | None:
        """Ask it to stop, force it after ``timeout`` seconds; its exit code. Idempotent."""
        ...

    async def wait(self, handle: WorkerHandle) -> int | None:
        """Return once it has ended (by itself, a crash, or `stop`), with its exit code."""
        ...

    def alive(self, handle: WorkerHandle) -> bool: ...

    def log_tail(self, handle: WorkerHandle, lines: int = 50) -> list[str]:
        """The last lines it printed (stdout and stderr)."""
        ...
