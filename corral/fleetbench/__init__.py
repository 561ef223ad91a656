"""The workload side and the metrics of the fleet benchmark (``corral bench fleet``).

:mod:`.traces` reads the trace slices shipped in ``data/``, :mod:`.workload` turns them
(or synthetic generators) into seeded arrival streams, and :mod:`.metrics` scores the
per-request records a simulation run produces. Nothing here runs the simulation itself.
"""
