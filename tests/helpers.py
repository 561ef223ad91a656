"""Test helpers: run a real gateway on a real socket inside the test's event loop."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import uvicorn

from corral.adapters.store import Store
from corral.app.factory import create_app
from corral.app.gateway import Gateway
from corral.app.listener import Server
from corral.config import load_settings
from corral.core.policies import POLICIES
from corral.sim.launch import NodeSpec, SimNode, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig

__all__ = [
    "FAST_SIM",
    "SIM_MODELS",
    "RunningGateway",
    "SimFleet",
    "free_port",
    "run_gateway",
    "sim_fleet",
    "until",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningGateway:
    url: str
    gw: Gateway


@asynccontextmanager
async def run_gateway(
    backends: list[str] | list[dict[str, Any]],
    *,
    store: Store | None = None,
    environ: dict[str, str] | None = None,
    bind_port: int = 0,
    **overrides: Any,
) -> AsyncIterator[RunningGateway]:
    """A gateway over real sockets, configured like ``corral serve --backend ...``.

    Each gets a data directory of its own (never the real home's), unless the test
    names one; ``store`` hands in an open store (a PostgreSQL schema of the test's),
    ``environ`` is what it reads CORRAL_ADMIN_KEY from; ``bind_port`` a port chosen
    in advance (0 = any free one).
    """
    made = None
    if "data_dir" not in overrides:
        made = tempfile.mkdtemp(prefix="corral-test-")
        overrides["data_dir"] = made
    try:
        async with _serve(backends, store, environ or {}, overrides, bind_port) as running:
            yield running
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


@asynccontextmanager
async def _serve(
    backends: list[str] | list[dict[str, Any]],
    store: Store | None,
    environ: dict[str, str],
    overrides: dict[str, Any],
    bind_port: int = 0,
) -> AsyncIterator[RunningGateway]:
    settings = load_settings(
        None,
        environ={},
        overrides={"backends": backends, **overrides},
        known_policies=POLICIES,
    )
    app = create_app(settings, gateway=Gateway(settings, store=store, environ=environ))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", bind_port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="none", http="httptools", lifespan="on", access_log=False, log_level="warning"
    )
    server = Server(config)  # Corral's accept loop, as `corral serve` runs it
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", app.state.gateway)
    finally:
        server.should_exit = True
        await task
        sock.close()


FAST_SIM = NodeConfig(speed=200.0, jitter=0.0)  # fast, but durations stay non-zero
SIM_MODELS = ("llama3.2:1b", "qwen2.5:0.5b", "nomic-embed-text")


@dataclass
class SimFleet:
    gateway: RunningGateway
    nodes: list[SimNode]

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def gw(self) -> Gateway:
        return self.gateway.gw

    def node(self, name: str) -> SimNode:
        return next(n for n in self.nodes if n.name == name)


@asynccontextmanager
async def sim_fleet(
    *specs: NodeSpec, max_concurrency: int | None = None, **overrides: Any
) -> AsyncIterator[SimFleet]:
    """Simulated Ollama nodes (named sim0, sim1, ...) behind a real gateway."""
    if not specs:
        specs = (NodeSpec(), NodeSpec())
    named = [
        replace(
            s,
            name=s.name or f"sim{i}",
            config=s.config if s.config != NodeConfig() else FAST_SIM,
            models=s.models if s.models != ("llama3.2:1b",) else SIM_MODELS,
        )
        for i, s in enumerate(specs)
    ]
    nodes = await start_nodes(named)
    try:
        backends = [
            {"name": n.name, "url": n.url}
            | ({"max_concurrency": max_concurrency} if max_concurrency else {})
            for n in nodes
        ]
        async with run_gateway(backends, **overrides) as running:
            yield SimFleet(running, nodes)
    finally:
        await stop_nodes(nodes)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for a condition that the system reaches on its own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
