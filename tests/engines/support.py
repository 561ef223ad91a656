"""Shared bits of the engine tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["ALIAS", "PRINTABLE", "is_printable", "sse_events"]

# The id the shared engine is started under, so /v1/models lists a name, not a path.
ALIAS = "tiny-llama"
PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


def is_printable(text: str) -> bool:
    return all(ch in PRINTABLE for ch in text)


def sse_events(lines: Iterable[str]) -> list[Any]:
    """The ``data:`` payloads of a server-sent event stream: parsed JSON, or the raw
    string (``"[DONE]"``); any other non-blank line fails the test."""
    events: list[Any] = []
    for line in lines:
        if not line.strip():
            continue
        assert line.startswith("data: "), f"not an SSE data line: {line!r}"
        payload = line.removeprefix("data: ")
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
