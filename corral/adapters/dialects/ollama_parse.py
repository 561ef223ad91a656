"""Read Ollama-dialect client requests (/api/chat, /api/generate, /api/embed and the
legacy /api/embeddings) into canonical requests, with 400s that name the field.

Ollama streams unless told otherwise, so ``stream`` defaults to true here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from corral.adapters.dialects.common import OLLAMA_THINK_LEVELS, decode_body, object_to_args
from corral.core.canonical import (
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    Message,
    Sampling,
    ToolCall,
)
from corral.core.errors import InvalidField

__all__ = ["parse_chat", "parse_embed", "parse_generate", "sampling_from_options"]

Duration = str | int | float


class _Base(msgspec.Struct, kw_only=True):
    model: str = ""
    name: str = ""  # older clients say "name"
    stream: bool = True
    keep_alive: Duration | None = None
    options: dict[str, Any] | None = None


class _Function(msgspec.Struct):
    name: str
    arguments: dict[str, Any] | None = None
    index: int | None = None


class _ToolCall(msgspec.Struct):
    function: _Function
    id: str | None = None


class _Message(msgspec.Struct):
    role: str
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class _Chat(_Base, kw_only=True):
    messages: list[_Message] = []
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None


class _Generate(_Base, kw_only=True):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None


class _Embed(_Base, kw_only=True):
    input: str | list[str] | None = None
    truncate: bool | None = None
    dimensions: int | None = None


class _Embeddings(_Base, kw_only=True):
    prompt: str | None = None


_chat = msgspec.json.Decoder(_Chat)
_generate = msgspec.json.Decoder(_Generate)
_embed = msgspec.json.Decoder(_Embed)
_embeddings = msgspec.json.Decoder(_Embeddings)

_ROLES = frozenset(("system", "user", "assistant", "tool"))

# Ollama options with a canonical home, and the type each must have.
_INT_OPTIONS = ("top_k", "seed", "num_predict", "num_ctx")
_FLOAT_OPTIONS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
)


def _model(b: _Base) -> str:
    model = b.model or b.name
    if not model:
        raise InvalidField("model is required", param="model")
    return model


def _int(options: dict[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    # JSON numbers from Go clients may be whole floats; bool is an int in Python.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidField(f"options.{key} must be an integer", param=f"options.{key}")


def _float(options: dict[str, Any], key: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise InvalidField(f"options.{key} must be a number", param=f"options.{key}")


def sampling_from_options(options: dict[str, Any] | None) -> Sampling:
    """Ollama ``options`` as Sampling; options without a canonical field go to extra."""
    if not options:
        return Sampling()
    ints = {k: _int(options, k) for k in _INT_OPTIONS}
    floats = {k: _float(options, k) for k in _FLOAT_OPTIONS}
    stop = options.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise InvalidField("options.stop must be a list of strings", param="options.stop")
    num_predict = ints["num_predict"]
    known = {*_INT_OPTIONS, *_FLOAT_OPTIONS, "stop"}
    return Sampling(
        temperature=floats["temperature"],
        top_p=floats["top_p"],
        top_k=ints["top_k"],
        seed=ints["seed"],
        stop=stop,
        # -1 (no limit) and -2 (fill the context) both mean "no cap" elsewhere.
        max_tokens=num_predict if num_predict is not None and num_predict >= 0 else None,
        presence_penalty=floats["presence_penalty"],
        frequency_penalty=floats["frequency_penalty"],
        repeat_penalty=floats["repeat_penalty"],
        num_ctx=ints["num_ctx"],
        extra={k: v for k, v in options.items() if k not in known},
    )


def _think(value: bool | str | None) -> bool | str | None:
    if isinstance(value, str) and value not in OLLAMA_THINK_LEVELS:
        raise InvalidField("think must be true, false, low, medium, high or max", param="think")
    return value


def _format(value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if value == "":
        return None
    if isinstance(value, str) and value != "json":
        raise InvalidField('format must be "json" or a JSON schema', param="format")
    return value


def _message(i: int, m: _Message) -> Message:
    if m.role not in _ROLES:
        raise InvalidField(
            f"messages[{i}].role must be system, user, assistant or tool",
            param=f"messages[{i}].role",
        )
    msg = Message(
        role=m.role,
        content=m.content or "",
        images=list(m.images or ()),
        tool_call_id=m.tool_call_id,
        tool_name=m.tool_name,
        thinking=m.thinking or None,
    )
    for j, tc in enumerate(m.tool_calls or ()):
        fn = tc.function
        index = fn.index if fn.index is not None else j
        msg.tool_calls.append(ToolCall(fn.name, object_to_args(fn.arguments), tc.id, index))
    return msg


def parse_chat(body: bytes) -> ChatRequest:
    """An Ollama /api/chat body as a canonical ChatRequest."""
    b = decode_body(_chat, body)
    return ChatRequest(
        model=_model(b),
        messages=[_message(i, m) for i, m in enumerate(b.messages)],
        stream=b.stream,
        tools=b.tools,
        format=_format(b.format),
        think=_think(b.think),
        sampling=sampling_from_options(b.options),
        keep_alive=b.keep_alive,
    )


def parse_generate(body: bytes) -> CompletionRequest:
    """An Ollama /api/generate body as a canonical CompletionRequest."""
    b = decode_body(_generate, body)
    return CompletionRequest(
        model=_model(b),
        prompt=b.prompt,
        stream=b.stream,
        suffix=b.suffix,
        system=b.system,
        raw=b.raw,
        images=list(b.images or ()),
        template=b.template,
        context=b.context,
        format=_format(b.format),
        think=_think(b.think),
        sampling=sampling_from_options(b.options),
        keep_alive=b.keep_alive,
    )


def parse_embed(body: bytes, *, legacy: bool) -> EmbedRequest:
    """An /api/embed body (``legacy=False``) or a legacy /api/embeddings one."""
    if legacy:
        old = decode_body(_embeddings, body)
        if old.prompt is None:
            raise InvalidField("prompt is required", param="prompt")
        return EmbedRequest(
            model=_model(old), inputs=[old.prompt], single=True, keep_alive=old.keep_alive
        )
    b = decode_body(_embed, body)
    if b.input is None:
        raise InvalidField("input is required", param="input")
    single = isinstance(b.input, str)
    inputs = [b.input] if isinstance(b.input, str) else b.input
    if b.dimensions is not None and b.dimensions < 1:
        raise InvalidField("dimensions must be positive", param="dimensions")
    return EmbedRequest(
        model=_model(b),
        inputs=inputs,
        single=single,
        dimensions=b.dimensions,
        truncate=b.truncate,
        keep_alive=b.keep_alive,
    )
