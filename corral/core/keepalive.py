"""Ollama's ``keep_alive``: how long a model stays loaded after a request.

A number is seconds; a string is a Go duration (``"10m"``, ``"1h30m"``, ``"0"``); a
negative value of either means forever. Checked here so a bad value is refused with
a clear message before any backend is asked.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_keep_alive"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_UNITS["h"] = 3600.0
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_WHOLE = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")


def parse_keep_alive(value: str | int | float) -> float:
    """Seconds (``math.inf`` for forever); ValueError says what is wrong."""
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration such as 10m, or seconds")
    if isinstance(value, int | float):
        if math.isnan(value):
            raise ValueError("keep_alive must be a number of seconds, not NaN")
        return math.inf if value < 0 else float(value)
    text = value.strip()
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _WHOLE.fullmatch(text):
        raise ValueError(
            f"keep_alive {value!r} is not a duration: use a number of seconds or a "
            "Go duration such as 30s, 10m or 1h30m (negative = forever)"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    return math.inf if text.startswith("-") and seconds > 0 else seconds
