"""Ports for new workers: from the configured range, or any the system has free."""

from __future__ import annotations

import socket
from collections.abc import Collection

from corral.adapters.workers.base import WorkerStartError

__all__ = ["pick_port"]


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host: str, span: tuple[int, int] | None, taken: Collection[int]) -> int:
    """A port no worker of ours holds and nothing else listens on right now.

    ``span`` is the configured (first, last) range; None asks the system for a free
    one. Either way another program could take it before the worker binds it; the
    worker then fails to start and is reported like any other start failure.
    """
    if span is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(16):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in taken:
                return port
        raise WorkerStartError(f"no free port found on {host}")
    first, last = span
    for port in range(first, last + 1):
        if port not in taken and _bindable(host, port):
            return port
    raise WorkerStartError(f"no free port left in {first}-{last} on {host}")
