"""Object census for a running gateway (bench only; never imported by Corral).

Put this directory on PYTHONPATH and set OBJPROBE_OUT=/path/census: each SIGUSR1 writes
``/path/census.N`` (N = 1, 2, ...), a JSON count of the objects the cyclic collector
tracks, by type, plus the collector's generation counts. Two censuses taken under the
same load some seconds apart show what a stream keeps alive (the counts divided by the
open streams) and what grows without bound (the difference):

    PYTHONPATH=bench/objprobe OBJPROBE_OUT=/tmp/census corral serve ...
    kill -USR1 <pid>; sleep 6; kill -USR1 <pid>

Walking every tracked object takes tens of milliseconds: a census stalls the gateway.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal

_OUT = os.environ.get("OBJPROBE_OUT")

if _OUT:
    _taken = [0]

    def _census(*_: object) -> None:
        counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
        _taken[0] += 1
        with open(f"{_OUT}.{_taken[0]}", "w") as f:
            json.dump(
                {
                    "frozen": gc.get_freeze_count(),
                    "count": gc.get_count(),
                    "types": counts.most_common(),
                },
                f,
            )

    signal.signal(signal.SIGUSR1, _census)
