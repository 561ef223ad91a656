"""Spawned workers on the running gateway: start, watch, scale and stop them.

`WorkerPool` (``pool``) runs each worker from its reservation to its end: started by
the provider, joined to the fleet once ready, drained and stopped when retired,
noticed when it dies. ``scaling`` gives the pure autoscaler (corral/core/autoscale.py)
what it looks at every ``workers.interval_s`` and carries out what it decides.
"""

from __future__ import annotations

from corral.app.workers.pool import Worker, WorkerPool
from corral.app.workers.scaling import ScaleEvent, Scaling

__all__ = ["ScaleEvent", "Scaling", "Worker", "WorkerPool"]
