"""Shared bits of the worker tests: a gateway whose workers are `corral sim` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from corral.app.workers import Worker, WorkerPool
from tests.helpers import RunningGateway, run_gateway, until

__all__ = ["SIM", "WorkersGateway", "gone", "workers_gateway"]

# A simulated Ollama node per worker; quick to start (no gateway CLI imported).
SIM = "{python} -m corral.sim --port {port} --models llama3.2:1b --loaded llama3.2:1b"


def gone(pid: int | None) -> bool:
    """Ended (a zombie nobody reaped yet counts: it runs nothing)."""
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class WorkersGateway:
    running: RunningGateway
    client: httpx.AsyncClient

    @property
    def pool(self) -> WorkerPool:
        assert self.running.gw.workers is not None
        return self.running.gw.workers

    def ready(self) -> list[Worker]:
        return [w for w in self.pool.workers.values() if w.state == "ready"]

    async def until_ready(self, n: int, timeout: float = 30.0) -> list[Worker]:
        await until(lambda: len(self.ready()) == n, timeout=timeout)
        return self.ready()

    def pids(self) -> set[int]:
        every = [*self.pool.workers.values(), *self.pool.ended]
        return {w.handle.pid for w in every if w.handle is not None and w.handle.pid}

    async def generate(self, **options: Any) -> httpx.Response:
        body = {"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": options}
        return await self.client.post("/api/generate", json=body)


@asynccontextmanager
async def workers_gateway(
    backends: list[Any] | None = None,
    *,
    environ: dict[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    **workers: Any,
) -> AsyncIterator[WorkersGateway]:
    """A gateway with ``workers`` settings (short intervals) and other ``settings``; on
    the way out, checks that no worker process it ever started is left running."""
    cfg = {"command": SIM, "interval_s": 0.1, "ready_timeout_s": 30.0} | workers
    pids: set[int] = set()
    async with (
        run_gateway(backends or [], workers=cfg, environ=environ, **(settings or {})) as running,
        httpx.AsyncClient(base_url=running.url, timeout=60.0) as client,
    ):
        wg = WorkersGateway(running, client)
        try:
            yield wg
        finally:
            pids = wg.pids()
    left = [pid for pid in pids if not gone(pid)]
    assert not left, f"worker processes outlived the gateway: {left}"
