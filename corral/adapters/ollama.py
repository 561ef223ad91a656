"""The Ollama dialect: request shapes the gateway validates, and the usage it reads.

Only the fields Corral looks at, or whose type Ollama itself would reject, are
declared; everything else passes through to the backend untouched.
"""

from __future__ import annotations

from typing import Any

import msgspec

from corral.core.errors import BadRequest, InvalidField, InvalidJSON
from corral.core.keepalive import parse_keep_alive

__all__ = [
    "REQUEST_TYPES",
    "Final",
    "decode_request",
    "read_final",
]

Duration = str | int | float


class _Base(msgspec.Struct, forbid_unknown_fields=False):
    model: str = ""
    name: str = ""  # older clients send "name" instead of "model"
    stream: bool | None = None
    keep_alive: Duration | None = None
    options: dict[str, Any] | None = None


class GenerateRequest(_Base):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    images: list[str] | None = None
    format: str | dict[str, Any] | None = None
    raw: bool | None = None
    think: bool | str | None = None
    context: list[int] | None = None


class ToolCall(msgspec.Struct, forbid_unknown_fields=False):
    function: dict[str, Any] | None = None


class Message(msgspec.Struct, forbid_unknown_fields=False):
    role: str
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None


class ChatRequest(_Base):
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None


class EmbedRequest(_Base):
    input: str | list[str] | None = None
    truncate: bool | None = None
    dimensions: int | None = None


class EmbeddingsRequest(_Base):
    prompt: str | None = None


class ShowRequest(_Base):
    verbose: bool | None = None


REQUEST_TYPES: dict[str, type[_Base]] = {
    "/api/generate": GenerateRequest,
    "/api/chat": ChatRequest,
    "/api/embed": EmbedRequest,
    "/api/embeddings": EmbeddingsRequest,
    "/api/show": ShowRequest,
}

_decoders = {path: msgspec.json.Decoder(t) for path, t in REQUEST_TYPES.items()}


def decode_request(endpoint: str, body: bytes) -> _Base:
    """Parse and type-check a request body once; raise a 400 naming the problem."""
    if not body.strip():
        raise BadRequest("missing request body")
    try:
        req = _decoders[endpoint].decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        param = text.rsplit("`$.", 1)[1].rstrip("`") if "`$." in text else None
        raise InvalidField(f"invalid request: {text}", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidJSON(f"invalid JSON in request body: {exc}") from None
    except RecursionError:  # msgspec's depth guard: [[[[...]]]] thousands deep
        raise InvalidJSON("invalid JSON in request body: nested too deeply") from None
    if isinstance(req.keep_alive, str):
        # Ollama would say only "time: missing unit in duration"; name the field.
        try:
            parse_keep_alive(req.keep_alive)
        except ValueError as exc:
            raise InvalidField(str(exc), param="keep_alive") from None
    if not req.model:
        if not req.name:
            raise InvalidField("model is required", param="model")
        req.model = req.name
    return req


class _Said(msgspec.Struct, forbid_unknown_fields=False):
    content: str | None = None
    thinking: str | None = None


class Final(msgspec.Struct, forbid_unknown_fields=False):
    """The counts on Ollama's last chunk (``done: true``), and its text: all of a whole
    answer's, for an estimate when the counts are missing."""

    done: bool = False
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    load_duration: int | None = None
    error: str | None = None
    response: str | None = None
    thinking: str | None = None
    message: _Said | None = None

    def text_chars(self) -> int:
        said = self.message
        if said is not None:
            return len(said.content or "") + len(said.thinking or "")
        return len(self.response or "") + len(self.thinking or "")


_final = msgspec.json.Decoder(Final)


def read_final(data: bytes) -> Final | None:
    """Parse the last complete JSON line of ``data`` (a whole body or a stream's tail)."""
    data = data.rstrip()
    start = data.rfind(b"\n") + 1
    try:
        return _final.decode(data[start:])
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
