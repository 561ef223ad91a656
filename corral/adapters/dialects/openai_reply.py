"""Whole (non-streamed) OpenAI-dialect answers: read a backend's, render a client's."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from corral.adapters.dialects import reasons
from corral.adapters.dialects.common import base64_to_floats, call_id, encode, floats_to_base64
from corral.core.canonical import EmbedReply, Reply, ToolCall, Usage
from corral.core.errors import UpstreamError

__all__ = [
    "UsageIn",
    "error_message",
    "parse_embed_reply",
    "parse_reply",
    "render_embed_reply",
    "render_reply",
    "tool_calls_out",
    "usage_out",
]


class _Base(msgspec.Struct):
    pass


class FunctionIn(_Base):
    name: str | None = None
    arguments: str | None = None


class ToolCallIn(_Base):
    index: int = 0
    id: str | None = None
    function: FunctionIn | None = None


class MessageIn(_Base):
    content: str | None = None
    # llama.cpp and older vLLM say reasoning_content; newer vLLM says reasoning.
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallIn] | None = None


class ChoiceIn(_Base):
    index: int = 0
    message: MessageIn | None = None
    delta: MessageIn | None = None  # stream chunks
    text: str | None = None  # completions
    finish_reason: str | None = None


class UsageIn(_Base):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0

    def canonical(self) -> Usage:
        return Usage(self.prompt_tokens or 0, self.completion_tokens or 0)


class AnswerIn(_Base):
    """A chat or completion answer, or one stream chunk of either."""

    model: str = ""
    created: int = 0
    choices: list[ChoiceIn] = []
    usage: UsageIn | None = None
    error: Any = None
    object: str | None = None
    message: str | None = None  # older vLLM's flat {"object": "error", "message": ...}


class _EmbeddingIn(_Base):
    embedding: list[float] | str
    index: int = 0


class _EmbedAnswerIn(_Base):
    data: list[_EmbeddingIn] = []
    model: str = ""
    usage: UsageIn | None = None
    error: Any = None


_answer = msgspec.json.Decoder(AnswerIn)
_embed_answer = msgspec.json.Decoder(_EmbedAnswerIn)


def error_message(a: AnswerIn) -> str | None:
    """The text of an error answer ({"error": {...}}, {"error": "..."} or old vLLM's)."""
    if a.error is not None:
        if isinstance(a.error, dict):
            return str(a.error.get("message") or a.error)
        return str(a.error)
    if a.object == "error":
        return a.message or "backend error"
    return None


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamError(f"backend answered malformed JSON: {exc}") from None
    except RecursionError:
        raise UpstreamError("backend answered JSON nested too deeply") from None


def tool_calls_in(calls: list[ToolCallIn] | None) -> list[ToolCall]:
    out = []
    for j, tc in enumerate(calls or ()):
        fn = tc.function or FunctionIn()
        out.append(ToolCall(fn.name or "", fn.arguments or "{}", tc.id, tc.index or j))
    return out


def parse_reply(body: bytes) -> Reply:
    """A backend's /v1/chat/completions or /v1/completions answer as a Reply."""
    a: AnswerIn = _decode(_answer, body)
    if (err := error_message(a)) is not None:
        raise UpstreamError(err)
    reply = Reply(model=a.model, created=a.created)
    if a.usage is not None:
        reply.usage = a.usage.canonical()
    choice = next((c for c in a.choices if c.index == 0), None)
    if choice is None:
        return reply
    reply.finish_reason = reasons.from_openai(choice.finish_reason)
    if choice.message is not None:
        m = choice.message
        reply.content = m.content or ""
        reply.thinking = m.reasoning_content or m.reasoning or None
        reply.tool_calls = tool_calls_in(m.tool_calls)
    else:
        reply.content = choice.text or ""
    return reply


def parse_embed_reply(body: bytes) -> EmbedReply:
    a: _EmbedAnswerIn = _decode(_embed_answer, body)
    if a.error is not None:
        raise UpstreamError(str(a.error.get("message") if isinstance(a.error, dict) else a.error))
    rows = sorted(a.data, key=lambda e: e.index)
    vectors = [
        base64_to_floats(e.embedding) if isinstance(e.embedding, str) else e.embedding for e in rows
    ]
    prompt = a.usage.prompt_tokens if a.usage is not None else None
    return EmbedReply(model=a.model, embeddings=vectors, prompt_tokens=prompt)


def usage_out(u: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def tool_calls_out(calls: list[ToolCall], seed: str, first: int = 0) -> list[dict[str, Any]]:
    """OpenAI tool calls; ids are made from ``seed`` when the backend gave none."""
    return [
        {
            "index": first + j,
            "id": tc.id or call_id(seed, first + j),
            "type": "function",
            "function": {"name": tc.name, "arguments": tc.arguments},
        }
        for j, tc in enumerate(calls)
    ]


def render_reply(
    reply: Reply, *, kind: Literal["chat", "completion"], id: str, created: int
) -> bytes:
    """A client's /v1/chat/completions (``chat.completion``) or /v1/completions
    (``text_completion``) answer."""
    finish = reasons.to_openai(reply.finish_reason, tool_calls=bool(reply.tool_calls))
    choice: dict[str, Any] = {"index": 0}
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.thinking:
            message["reasoning_content"] = reply.thinking
        if reply.tool_calls:
            calls = tool_calls_out(reply.tool_calls, id)
            for c in calls:
                del c["index"]  # only stream deltas carry an index
            message["tool_calls"] = calls
            if not reply.content:
                message["content"] = None
        choice["message"] = message
        obj = "chat.completion"
    else:
        choice["text"] = reply.content
        obj = "text_completion"
    choice["logprobs"] = None
    choice["finish_reason"] = finish
    out: dict[str, Any] = {
        "id": id,
        "object": obj,
        "created": created,
        "model": reply.model,
        "choices": [choice],
    }
    if reply.usage is not None:
        out["usage"] = usage_out(reply.usage)
    return encode(out)


def render_embed_reply(r: EmbedReply, *, encoding_format: str) -> bytes:
    """A client's /v1/embeddings answer; base64 is little-endian float32."""
    b64 = encoding_format == "base64"
    data = [
        {
            "object": "embedding",
            "embedding": floats_to_base64(vec) if b64 else vec,
            "index": i,
        }
        for i, vec in enumerate(r.embeddings)
    ]
    prompt = r.prompt_tokens or 0
    out = {
        "object": "list",
        "data": data,
        "model": r.model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return encode(out)
