"""Write canonical requests as bodies for an OpenAI-kind backend (vLLM, llama.cpp).

Every writer returns ``Outgoing(body, dropped)``: ``dropped`` names the client's
fields this dialect cannot carry (``keep_alive``, ``options.num_ctx``, a boolean
``think``, ...). Streams always ask for usage, because the gateway meters every one.
"""

from __future__ import annotations

from typing import Any

from corral.adapters.dialects.common import (
    Outgoing,
    call_id,
    effort_from_think,
    encode,
    image_data_uri,
)
from corral.core.canonical import ChatRequest, CompletionRequest, EmbedRequest, Message, Sampling

__all__ = ["chat_body", "completion_body", "embed_body"]

# Ollama options that vLLM and llama.cpp read under the same name.
_SHARED_EXTRA = frozenset(("min_p",))


def _sampling(s: Sampling, body: dict[str, Any], dropped: list[str]) -> None:
    for key, value in (
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("seed", s.seed),
        ("stop", s.stop),
        ("max_tokens", s.max_tokens),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
        # Not OpenAI's, but both vLLM and llama.cpp read it by this name.
        ("top_k", s.top_k),
    ):
        if value is not None:
            body[key] = value
    if s.repeat_penalty is not None:
        # vLLM calls it repetition_penalty, llama.cpp repeat_penalty; each server
        # ignores the other's name, so send both.
        body["repetition_penalty"] = s.repeat_penalty
        body["repeat_penalty"] = s.repeat_penalty
    if s.num_ctx is not None:
        dropped.append("options.num_ctx")  # fixed when the server started
    for key, value in s.extra.items():
        if key in _SHARED_EXTRA:
            body[key] = value
        else:
            dropped.append(f"options.{key}")


def _format(fmt: str | dict[str, Any] | None, body: dict[str, Any]) -> None:
    if fmt == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        # vLLM requires a name; Ollama's format has none to carry over.
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": fmt},
        }


def _stream(stream: bool, body: dict[str, Any]) -> None:
    body["stream"] = stream
    if stream:
        # vLLM rejects stream_options on a request that does not stream.
        body["stream_options"] = {"include_usage": True}


def _think(think: bool | str | None, body: dict[str, Any], dropped: list[str]) -> None:
    if think is None:
        return
    effort = effort_from_think(think)
    if effort is None:
        dropped.append("think")  # on/off has no reasoning_effort form
    else:
        body["reasoning_effort"] = effort


def _content(m: Message) -> str | list[dict[str, Any]] | None:
    if not m.images and not m.image_urls:
        if not m.content and m.tool_calls:
            return None
        return m.content
    parts: list[dict[str, Any]] = []
    if m.content:
        parts.append({"type": "text", "text": m.content})
    for b64 in m.images:
        parts.append({"type": "image_url", "image_url": {"url": image_data_uri(b64)}})
    for url in m.image_urls:
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def _messages(messages: list[Message], dropped: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # Calls still waiting for their result, oldest first: Ollama names a tool
    # result only by tool_name, OpenAI links it by the call's id.
    pending: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        msg: dict[str, Any] = {"role": m.role, "content": _content(m)}
        if m.tool_calls:
            calls = []
            for j, tc in enumerate(m.tool_calls):
                cid = tc.id or call_id(f"msg{i}", j)
                pending.append((cid, tc.name))
                calls.append(
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": tc.name, "arguments": tc.arguments},
                    }
                )
            msg["tool_calls"] = calls
        if m.role == "tool":
            answers = m.tool_call_id or _answered(pending, m.tool_name)
            if answers is not None:
                msg["tool_call_id"] = answers
                pending[:] = [p for p in pending if p[0] != answers]
        if m.thinking:
            dropped.append(f"messages[{i}].thinking")
        out.append(msg)
    return out


def _answered(pending: list[tuple[str, str]], name: str | None) -> str | None:
    for cid, called in pending:
        if called == name:
            return cid
    return pending[0][0] if pending else None


def chat_body(req: ChatRequest, model: str) -> Outgoing:
    """A /v1/chat/completions body for ``model`` on an OpenAI-kind backend."""
    dropped: list[str] = []
    body: dict[str, Any] = {"model": model, "messages": _messages(req.messages, dropped)}
    _stream(req.stream, body)
    _sampling(req.sampling, body, dropped)
    if req.n != 1:
        body["n"] = req.n
    if req.tools:
        body["tools"] = req.tools
    if req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    _format(req.format, body)
    _think(req.think, body, dropped)
    if req.keep_alive is not None:
        dropped.append("keep_alive")
    return Outgoing(encode(body), dropped)


def completion_body(req: CompletionRequest, model: str) -> Outgoing:
    """A /v1/completions body. The prompt goes as written: /v1/completions applies
    no chat template (to keep Ollama's templated generate, send it as a chat with
    ``convert.completion_as_chat``)."""
    dropped: list[str] = []
    body: dict[str, Any] = {"model": model, "prompt": req.prompt}
    if req.suffix is not None:
        body["suffix"] = req.suffix
    _stream(req.stream, body)
    _sampling(req.sampling, body, dropped)
    if "max_tokens" not in body:
        # vLLM's /v1/completions stops at 16 tokens unless told; null means "until
        # the context is full" in vLLM and is ignored by llama.cpp.
        body["max_tokens"] = None
    if req.n != 1:
        body["n"] = req.n
    _format(req.format, body)
    for name, present in (
        ("system", req.system is not None),
        ("images", bool(req.images)),
        ("template", req.template is not None),
        ("context", req.context is not None),
        ("keep_alive", req.keep_alive is not None),
    ):
        if present:
            dropped.append(name)
    if req.think is not None:
        dropped.append("think")
    return Outgoing(encode(body), dropped)


def embed_body(req: EmbedRequest, model: str) -> Outgoing:
    """A /v1/embeddings body. Always asks for floats: the gateway reads the numbers
    and renders base64 itself when the client wants it."""
    dropped: list[str] = []
    body: dict[str, Any] = {"model": model, "input": req.inputs, "encoding_format": "float"}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.truncate is not None:
        dropped.append("truncate")  # OpenAI servers refuse over-long input instead
    if req.keep_alive is not None:
        dropped.append("keep_alive")
    return Outgoing(encode(body), dropped)
