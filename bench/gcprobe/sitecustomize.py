"""GC pause probe for a gateway under load (bench only; never imported by Corral).

Put this directory on PYTHONPATH and set GCPROBE_OUT=/path/out.json: every
collection is timed through ``gc.callbacks`` (per generation: when, how long, how many
objects it freed). SIGUSR2 writes the timings as JSON (also at exit, but uvicorn
ends by re-raising SIGTERM, which skips atexit). Corral >= stream-gc sets its own
thresholds when it starts, which override the GC_THRESHOLD knob below.
``bench/streams_ab.py --gc-probe`` does all of this and prints a summary per window.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import time

_OUT = os.environ.get("GCPROBE_OUT")

if _OUT:
    _events: list[tuple[float, int, float, int]] = []  # when, generation, pause s, freed
    _start = [0.0]

    def _cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _start[0] = time.perf_counter()
            return
        pause = time.perf_counter() - _start[0]
        gen = info["generation"]
        _events.append((time.monotonic(), gen, pause, info["collected"]))

    def _dump(*_: object) -> None:
        with open(_OUT, "w") as f:
            json.dump(
                {
                    "threshold": gc.get_threshold(),
                    "frozen": gc.get_freeze_count(),
                    "tracked": len(gc.get_objects()),
                    "events": _events,
                },
                f,
            )

    gc.callbacks.append(_cb)
    atexit.register(_dump)
    signal.signal(signal.SIGUSR2, _dump)


if _OUT:  # to try thresholds: a file GC_THRESHOLD ("700,1,1000") beside a tree's corral/
    import sys

    for _p in sys.path:
        _f = os.path.join(_p, "GC_THRESHOLD")
        if _p and os.path.exists(_f):
            with open(_f) as f:
                gc.set_threshold(*(int(x) for x in f.read().split(",")))
            break
