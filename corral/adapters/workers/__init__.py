"""Spawned workers: starting engine processes on demand, and knowing when they are ready.

``base`` is the provider protocol, ``process`` the local-command provider, ``ports``
picks ports, ``ready`` waits for an engine and pulls its required models. Deciding how
many workers there should be is pure and lives in ``corral.core.autoscale``; running
them as part of the fleet is ``corral.app.workers``.
"""

from __future__ import annotations

from corral.adapters.workers.base import Launch, WorkerHandle, WorkerProvider, WorkerStartError
from corral.adapters.workers.ports import pick_port
from corral.adapters.workers.process import ProcessProvider, ProcessWorker
from corral.adapters.workers.ready import wait_ready

__all__ = [
    "Launch",
    "ProcessProvider",
    "ProcessWorker",
    "WorkerHandle",
    "WorkerProvider",
    "WorkerStartError",
    "pick_port",
    "wait_ready",
]
