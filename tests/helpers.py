"""Test helpers: run a real gateway on a real socket inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from corral.app.factory import create_app
from corral.app.gateway import Gateway
from corral.config import load_settings
from corral.core.policies import POLICIES

__all__ = ["RunningGateway", "free_port", "run_gateway"]


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
    backends: list[str], **overrides: Any
) -> AsyncIterator[RunningGateway]:
    """A gateway over real sockets, configured like ``corral serve --backend ...``."""
    settings = load_settings(
        None,
        environ={},
        overrides={"backends": backends, **overrides},
        known_policies=POLICIES,
    )
    app = create_app(settings)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="none", http="httptools", lifespan="on", access_log=False, log_level="warning"
    )
    server = uvicorn.Server(config)
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
