"""Ollama wire details shared by the simulator's handlers: JSON, times, durations, errors."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

__all__ = [
    "BUSY_MESSAGE",
    "BadRequest",
    "decode_body",
    "encode",
    "error_response",
    "json_response",
    "local_time",
    "not_found_message",
    "parse_keep_alive",
    "typed",
    "utc_now",
]

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
_FAR_FUTURE_S = 2**63 / 1e9  # Go's MaxInt64 nanoseconds: "forever"

encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DUR_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DUR_FULL = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")


_GO_TYPES: dict[type, str] = {str: "string", bool: "bool", list: "[]", dict: "map", int: "int"}


class BadRequest(Exception):
    """Answered 400 with Ollama's ``{"error": ...}`` body."""


def not_found_message(model: str) -> str:
    return f'model "{model}" not found, try pulling it first'


def parse_keep_alive(value: Any) -> float | None:
    """Ollama's keep_alive: numbers are seconds, strings Go durations; negative = forever.

    Returns seconds (``math.inf`` for forever) or None when absent.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest("Unsupported type: 'bool'")
    if isinstance(value, int | float):
        return math.inf if value < 0 else float(value)
    if not isinstance(value, str):
        raise BadRequest(f"Unsupported type: '{type(value).__name__}'")
    text = value.strip()
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _DUR_FULL.fullmatch(text):
        if re.fullmatch(r"[-+]?\d+(?:\.\d*)?", text):
            raise BadRequest(f'time: missing unit in duration "{value}"')
        raise BadRequest(f'time: invalid duration "{value}"')
    seconds = sum(float(n) * _UNITS[u] for n, u in _DUR_PART.findall(text))
    return math.inf if text.startswith("-") and seconds > 0 else seconds


def decode_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid character in request body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("json: cannot unmarshal into Go value of type object")
    return body


def typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """An optional field of the given type; a wrong type is the 400 Go's decoder gives."""
    value = body.get(name)
    if value is None:
        return None
    if kind is bool:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        go_type = _GO_TYPES.get(kind, "value") if isinstance(kind, type) else "value"
        raise BadRequest(
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            f"{where}.{name} of type {go_type}"
        )
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=encode(payload) if not isinstance(payload, bytes) else payload,
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def utc_now() -> str:
    """Go's RFC3339Nano in UTC, as Ollama's ``created_at``."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def local_time(epoch_s: float) -> str:
    """RFC3339 with the local offset, as Ollama's ``expires_at``; inf means "forever"."""
    if not math.isfinite(epoch_s):
        epoch_s = datetime.now(UTC).timestamp() + _FAR_FUTURE_S
    epoch_s = min(epoch_s, 253402300799.0)  # datetime stops at year 9999
    return datetime.fromtimestamp(epoch_s).astimezone().isoformat(timespec="microseconds")
