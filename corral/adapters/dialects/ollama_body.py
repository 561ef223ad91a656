"""Write canonical requests as bodies for an Ollama backend (/api/chat, /api/generate,
/api/embed).

Every writer returns ``Outgoing(body, dropped)``; ``dropped`` names the client's
fields Ollama cannot carry (``tool_choice``, ``n`` above 1, image URLs not fetched).
``stream`` is always written: Ollama streams when it is absent.
"""

from __future__ import annotations

from typing import Any

from corral.adapters.dialects.common import Outgoing, args_to_object, encode
from corral.core.canonical import ChatRequest, CompletionRequest, EmbedRequest, Message, Sampling

__all__ = ["chat_body", "embed_body", "generate_body", "options_from_sampling"]


def options_from_sampling(s: Sampling) -> dict[str, Any]:
    """Ollama ``options``; max_tokens becomes num_predict."""
    options: dict[str, Any] = {}
    for key, value in (
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("top_k", s.top_k),
        ("seed", s.seed),
        ("stop", s.stop),
        ("num_predict", s.max_tokens),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
        ("repeat_penalty", s.repeat_penalty),
        ("num_ctx", s.num_ctx),
    ):
        if value is not None:
            options[key] = value
    options.update(s.extra)
    return options


def _common(
    body: dict[str, Any],
    *,
    stream: bool,
    sampling: Sampling,
    fmt: str | dict[str, Any] | None,
    think: bool | str | None,
    keep_alive: str | int | float | None,
    n: int,
    dropped: list[str],
) -> None:
    body["stream"] = stream
    options = options_from_sampling(sampling)
    if options:
        body["options"] = options
    if fmt is not None:
        body["format"] = fmt
    if think is not None:
        body["think"] = think
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if n != 1:
        dropped.append("n")  # Ollama answers once per request


def _tool_names(messages: list[Message]) -> dict[str, str]:
    # Later calls win when ids repeat, as in Ollama's own OpenAI layer.
    return {tc.id: tc.name for m in messages for tc in m.tool_calls if tc.id}


def _message(i: int, m: Message, names: dict[str, str], dropped: list[str]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.images:
        msg["images"] = m.images
    if m.image_urls:
        dropped.append(f"messages[{i}].image_urls")  # Ollama takes image bytes only
    if m.thinking:
        msg["thinking"] = m.thinking
    if m.tool_calls:
        calls = []
        for j, tc in enumerate(m.tool_calls):
            param = f"messages[{i}].tool_calls[{j}].function.arguments"
            args = args_to_object(tc.arguments, param=param)
            fn = {"index": tc.index, "name": tc.name, "arguments": args}
            calls.append({"id": tc.id, "function": fn} if tc.id else {"function": fn})
        msg["tool_calls"] = calls
    if m.role == "tool":
        name = m.tool_name or (names.get(m.tool_call_id) if m.tool_call_id else None)
        if name:
            msg["tool_name"] = name
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
    return msg


def chat_body(req: ChatRequest, model: str) -> Outgoing:
    """An /api/chat body for ``model`` on an Ollama backend.

    Tool-call arguments go as objects (a 400 naming the field if they are not a
    JSON object); a tool result known only by ``tool_call_id`` gets the name of the
    call it answers.
    """
    dropped: list[str] = []
    names = _tool_names(req.messages)
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message(i, m, names, dropped) for i, m in enumerate(req.messages)],
    }
    if req.tools:
        body["tools"] = req.tools
    if req.tool_choice is not None:
        dropped.append("tool_choice")
    _common(
        body,
        stream=req.stream,
        sampling=req.sampling,
        fmt=req.format,
        think=req.think,
        keep_alive=req.keep_alive,
        n=req.n,
        dropped=dropped,
    )
    return Outgoing(encode(body), dropped)


def generate_body(req: CompletionRequest, model: str) -> Outgoing:
    """An /api/generate body for ``model`` on an Ollama backend."""
    dropped: list[str] = []
    body: dict[str, Any] = {"model": model, "prompt": req.prompt}
    for key, value in (
        ("suffix", req.suffix),
        ("system", req.system),
        ("template", req.template),
        ("context", req.context),
    ):
        if value is not None:
            body[key] = value
    if req.raw:
        body["raw"] = True
    if req.images:
        body["images"] = req.images
    _common(
        body,
        stream=req.stream,
        sampling=req.sampling,
        fmt=req.format,
        think=req.think,
        keep_alive=req.keep_alive,
        n=req.n,
        dropped=dropped,
    )
    return Outgoing(encode(body), dropped)


def embed_body(req: EmbedRequest, model: str) -> Outgoing:
    """An /api/embed body: input always as a list, whatever the client sent."""
    body: dict[str, Any] = {"model": model, "input": req.inputs}
    if req.truncate is not None:
        body["truncate"] = req.truncate
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.keep_alive is not None:
        body["keep_alive"] = req.keep_alive
    return Outgoing(encode(body), [])
