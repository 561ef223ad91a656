"""Whole (non-streamed) Ollama-dialect answers: read a backend's, render a client's."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from corral.adapters.dialects import reasons
from corral.adapters.dialects.common import args_to_object, encode, object_to_args
from corral.core.canonical import EmbedReply, Reply, Timings, ToolCall, Usage
from corral.core.errors import InvalidField, UpstreamError

__all__ = [
    "ChunkIn",
    "final_fields",
    "message_out",
    "parse_embed_reply",
    "parse_reply",
    "render_embed_reply",
    "render_reply",
    "timings_in",
    "tool_calls_in",
]

Kind = Literal["chat", "completion"]


class _FunctionIn(msgspec.Struct):
    name: str = ""
    arguments: dict[str, Any] | None = None
    index: int | None = None


class _ToolCallIn(msgspec.Struct):
    function: _FunctionIn
    id: str | None = None


class _MessageIn(msgspec.Struct):
    content: str = ""
    thinking: str | None = None
    tool_calls: list[_ToolCallIn] | None = None


class ChunkIn(msgspec.Struct):
    """An /api/chat or /api/generate answer, or one line of its stream."""

    model: str = ""
    message: _MessageIn | None = None
    response: str | None = None  # generate
    thinking: str | None = None  # generate
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_duration: int | None = None
    eval_duration: int | None = None
    error: str | None = None


class _EmbedIn(msgspec.Struct):
    model: str = ""
    embeddings: list[list[float]] | None = None
    embedding: list[float] | None = None  # legacy /api/embeddings
    prompt_eval_count: int | None = None
    error: str | None = None


_answer = msgspec.json.Decoder(ChunkIn)
_embed = msgspec.json.Decoder(_EmbedIn)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamError(f"backend answered malformed JSON: {exc}") from None
    except RecursionError:
        raise UpstreamError("backend answered JSON nested too deeply") from None


def tool_calls_in(calls: list[_ToolCallIn] | None) -> list[ToolCall]:
    out = []
    for j, tc in enumerate(calls or ()):
        fn = tc.function
        index = fn.index if fn.index is not None else j
        out.append(ToolCall(fn.name, object_to_args(fn.arguments), tc.id, index))
    return out


def timings_in(c: ChunkIn) -> Timings | None:
    if c.total_duration is None and c.load_duration is None and c.eval_duration is None:
        return None
    return Timings(c.total_duration, c.load_duration, c.prompt_eval_duration, c.eval_duration)


def parse_reply(body: bytes, *, kind: Kind) -> Reply:
    """A backend's /api/chat (``kind="chat"``) or /api/generate answer as a Reply."""
    c: ChunkIn = _decode(_answer, body)
    if c.error is not None:
        raise UpstreamError(c.error)
    reply = Reply(model=c.model, timings=timings_in(c))
    if kind == "chat" and c.message is not None:
        reply.content = c.message.content
        reply.thinking = c.message.thinking or None
        reply.tool_calls = tool_calls_in(c.message.tool_calls)
    else:
        reply.content = c.response or ""
        reply.thinking = c.thinking or None
    if c.done:
        reply.finish_reason = reasons.from_ollama(c.done_reason, tool_calls=bool(reply.tool_calls))
    if c.prompt_eval_count is not None or c.eval_count is not None:
        reply.usage = Usage(c.prompt_eval_count or 0, c.eval_count or 0)
    return reply


def parse_embed_reply(body: bytes) -> EmbedReply:
    """An /api/embed answer, or a legacy /api/embeddings one."""
    e: _EmbedIn = _decode(_embed, body)
    if e.error is not None:
        raise UpstreamError(e.error)
    vectors = e.embeddings if e.embeddings is not None else [e.embedding or []]
    return EmbedReply(model=e.model, embeddings=vectors, prompt_tokens=e.prompt_eval_count)


def message_out(content: str, thinking: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        msg["thinking"] = thinking
    if calls:
        msg["tool_calls"] = [
            {
                **({"id": tc.id} if tc.id else {}),
                "function": {
                    "index": tc.index,
                    "name": tc.name,
                    # A backend's malformed arguments are its fault, not the client's.
                    "arguments": _args(tc.arguments),
                },
            }
            for tc in calls
        ]
    return msg


def _args(text: str) -> dict[str, Any]:
    try:
        return args_to_object(text, param="arguments")
    except InvalidField:
        message = f"backend sent tool call arguments that are not a JSON object: {text!r}"
        raise UpstreamError(message) from None


def final_fields(
    out: dict[str, Any], reason: str | None, usage: Usage | None, timings: Timings | None
) -> None:
    """The fields of Ollama's last (``done: true``) object, in Ollama's order."""
    out["done"] = True
    out["done_reason"] = reasons.to_ollama(reason)
    t = timings or Timings()
    if t.total_duration is not None:
        out["total_duration"] = t.total_duration
    if t.load_duration is not None:
        out["load_duration"] = t.load_duration
    if usage is not None:
        out["prompt_eval_count"] = usage.prompt_tokens
    if t.prompt_eval_duration is not None:
        out["prompt_eval_duration"] = t.prompt_eval_duration
    if usage is not None:
        out["eval_count"] = usage.completion_tokens
    if t.eval_duration is not None:
        out["eval_duration"] = t.eval_duration


def render_reply(reply: Reply, *, kind: Kind, created_at: str) -> bytes:
    """A client's /api/chat or /api/generate answer (``done: true``)."""
    out: dict[str, Any] = {"model": reply.model, "created_at": created_at}
    if kind == "chat":
        out["message"] = message_out(reply.content, reply.thinking, reply.tool_calls)
    else:
        out["response"] = reply.content
        if reply.thinking:
            out["thinking"] = reply.thinking
    final_fields(out, reply.finish_reason, reply.usage, reply.timings)
    return encode(out)


def render_embed_reply(r: EmbedReply, *, legacy: bool) -> bytes:
    """A client's /api/embed answer, or with ``legacy`` an /api/embeddings one."""
    if legacy:
        return encode({"embedding": r.embeddings[0] if r.embeddings else []})
    out: dict[str, Any] = {"model": r.model, "embeddings": r.embeddings}
    if r.prompt_tokens is not None:
        out["prompt_eval_count"] = r.prompt_tokens
    return encode(out)
