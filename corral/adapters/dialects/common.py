"""What both dialect translators share: decoding with field-named 400s, the think ⇄
reasoning-effort scale, image data URIs, tool-call ids and argument forms, float32
base64, and the ``Outgoing`` pair every request writer returns.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from array import array
from typing import Any, NamedTuple, TypeVar

import msgspec

from corral.core.canonical import Delta
from corral.core.errors import BadRequest, InvalidField, InvalidJSON

__all__ = [
    "LineReader",
    "Outgoing",
    "args_to_object",
    "base64_to_floats",
    "call_id",
    "decode_body",
    "effort_from_think",
    "encode",
    "floats_to_base64",
    "image_data_uri",
    "object_to_args",
    "split_image_url",
    "think_from_effort",
]

T = TypeVar("T")

encode = msgspec.json.encode


class Outgoing(NamedTuple):
    """A request body for a backend, and the client fields it could not carry.

    ``dropped`` names each field the target dialect cannot express, in the client's
    terms (``keep_alive``, ``options.num_ctx``, ``messages[2].thinking``), so the
    gateway can log it or return it in a header; it is empty when nothing was lost.
    """

    body: bytes
    dropped: list[str]


def _param_of(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """Split msgspec's ``"Expected `int`, got `str` - at `$.n`"`` into text and field."""
    text = str(exc)
    head, sep, where = text.rpartition(" - at `$")
    if not sep:
        head, path = text, ""
    else:
        path = where.rstrip("`").lstrip(".")
    # A missing field is reported at its parent: name the field itself.
    marker = "missing required field `"
    if marker in head:
        name = head.split(marker, 1)[1].split("`", 1)[0]
        path = f"{path}.{name}" if path else name
    return head, path or None


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a client body once; a 400 that names the offending field otherwise."""
    if not body.strip():
        raise BadRequest("missing request body")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        head, param = _param_of(exc)
        where = f"{param}: " if param else ""
        raise InvalidField(f"invalid request: {where}{head}", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidJSON(f"invalid JSON in request body: {exc}") from None
    except RecursionError:  # msgspec's depth guard: [[[[...]]]] thousands deep
        raise InvalidJSON("invalid JSON in request body: nested too deeply") from None


# OpenAI's effort scale reaches past Ollama's at both ends; clamp as Ollama's own
# OpenAI layer does (openai/openai.go thinkFromReasoningEffort): none → no thinking,
# minimal → low, xhigh → max.
_EFFORT_TO_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "max",
    "max": "max",
}
# vLLM accepts only low/medium/high for reasoning_effort.
_THINK_TO_EFFORT = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
OLLAMA_THINK_LEVELS = frozenset(("low", "medium", "high", "max"))


def think_from_effort(effort: str, *, param: str) -> bool | str:
    try:
        return _EFFORT_TO_THINK[effort]
    except KeyError:
        allowed = ", ".join(_EFFORT_TO_THINK)
        raise InvalidField(f"{param} must be one of {allowed}", param=param) from None


def effort_from_think(think: bool | str | None) -> str | None:
    """The reasoning_effort for a think value, or None when it has no such form."""
    if isinstance(think, str):
        return _THINK_TO_EFFORT.get(think)
    return None


# The first bytes of each image format, as they look in base64.
_MAGIC = (
    ("/9j/", "image/jpeg"),
    ("iVBORw0KGgo", "image/png"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)


def image_data_uri(b64: str) -> str:
    """A data URI for base64 image bytes; the type is sniffed, PNG when unknown."""
    for prefix, mime in _MAGIC:
        if b64.startswith(prefix):
            return f"data:{mime};base64,{b64}"
    return f"data:image/png;base64,{b64}"


def split_image_url(url: str, *, param: str) -> tuple[str | None, str | None]:
    """(base64, None) for a data URI, (None, url) for an http(s) URL; else a 400."""
    if url.startswith("data:"):
        meta, sep, data = url.partition(",")
        if not sep or not meta.endswith(";base64"):
            raise InvalidField(f"{param}: image data URIs must be base64 encoded", param=param)
        return data, None
    if url.startswith(("http://", "https://")):
        return None, url
    raise InvalidField(f"{param} must be a data: URI or an http(s) URL", param=param)


def call_id(seed: str, n: int) -> str:
    """A stable tool-call id: the same answer renders the same ids on every retry."""
    digest = hashlib.blake2s(f"{seed}:{n}".encode(), digest_size=12).hexdigest()
    return f"call_{digest}"


_object = msgspec.json.Decoder(dict[str, Any])


def args_to_object(text: str, *, param: str) -> dict[str, Any]:
    """OpenAI's JSON-text arguments as the object Ollama wants; a 400 if not an object."""
    try:
        return _object.decode(text or "{}")
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise InvalidField(
            f"{param}: tool call arguments must be a JSON object", param=param
        ) from None


def object_to_args(obj: Any) -> str:
    return encode(obj if obj is not None else {}).decode()


_LITTLE = sys.byteorder == "little"


def floats_to_base64(vector: list[float]) -> str:
    """Little-endian float32, base64: the form OpenAI and Ollama answer for base64."""
    packed = array("f", vector)
    if not _LITTLE:
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def base64_to_floats(text: str) -> list[float]:
    packed = array("f")
    packed.frombytes(base64.b64decode(text))
    if not _LITTLE:
        packed.byteswap()
    return packed.tolist()


class LineReader:
    """Cuts bytes that arrive split anywhere into whole lines, for a stream decoder.

    Subclasses handle one line in ``_line``; ``_rest`` hands over an unterminated
    last line when the stream closes.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Delta]:
        out: list[Delta] = []
        buf = self._buf + data if self._buf else data
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            self._line(buf[start:nl], out)
            start = nl + 1
        self._buf = buf[start:]
        return out

    def _rest(self, out: list[Delta]) -> None:
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""

    def _line(self, line: bytes, out: list[Delta]) -> None:
        raise NotImplementedError
