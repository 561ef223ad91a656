"""Faults a simulated node can be told to show, and the seeded dice that pick victims.

Rates are fractions of inference requests (0 = never, 1 = always) — ``pull_error`` of
pulls; booleans apply to every request. Set at start (CLI flags, :class:`NodeSpec`) or
while running through ``POST /_sim/faults`` with a partial JSON object.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["RUNNER_CRASH", "FaultDice", "Faults"]

# What Ollama answers when a runner dies under a request.
RUNNER_CRASH = "llama runner process has terminated: exit status 2"


@dataclass(frozen=True, slots=True)
class Faults:
    error_rate: float = 0.0  # answered 500 {"error": ...} before any output
    error_mid_stream: float = 0.0  # a stream ends with an NDJSON {"error": ...} line
    hang: bool = False  # every /api request is accepted and never answered
    slow: float = 1.0  # multiplier on load and token durations
    drop_mid_stream: float = 0.0  # the connection is cut after `after_chunks` chunks
    malformed_json: float = 0.0  # one chunk (or the whole body) is broken JSON
    busy: bool = False  # every inference request gets the 503 "server busy"
    # A pull gives up after `after_chunks` progress lines, as a failed download does.
    pull_error: float = 0.0
    no_usage: bool = False  # answers carry no token counts (some engines send none)
    after_chunks: int = 2  # where mid-stream faults strike

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, patch: Mapping[str, Any]) -> Faults:
        """A copy with ``patch`` applied; ValueError names a bad key or value."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in patch.items():
            if key not in known:
                raise ValueError(f"unknown fault {key!r}; known: {sorted(known)}")
            changes[key] = _coerce(key, known[key].type, value)
        return replace(self, **changes)


def _coerce(key: str, kind: object, value: Any) -> Any:
    if kind in ("bool", bool):
        if not isinstance(value, bool):
            raise ValueError(f"fault {key!r} takes true or false")
        return value
    if kind in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"fault {key!r} takes a count >= 0")
        return value
    if isinstance(value, bool):  # a rate given as a flag: on = always
        value = 1.0 if value else 0.0
    if not isinstance(value, int | float) or value < 0:
        raise ValueError(f"fault {key!r} takes a number >= 0")
    if key != "slow" and value > 1:
        raise ValueError(f"fault {key!r} is a fraction between 0 and 1")
    return float(value)


class FaultDice:
    """Seeded draws, so a fault pattern repeats run after run."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        return rate >= 1 or self._rng.random() < rate
