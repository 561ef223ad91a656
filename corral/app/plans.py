"""How one request travels to one backend: the upstream path and body, and how the
answer comes back — forwarded untouched when the client and the backend speak the
same dialect, translated through the canonical types when they do not.

    client \\ backend   ollama                      openai (vLLM, llama.cpp, ...)
    ollama              pass-through                translate (/api/* → /v1/*)
    openai              translate (/v1/* → /api/*)  pass-through, usage always asked for
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import msgspec

from corral.adapters import ollama as ollama_wire
from corral.adapters.dialects import ollama as ol
from corral.adapters.dialects import openai as oa
from corral.adapters.dialects.convert import completion_as_chat
from corral.app.pipeline import RequestContext
from corral.core.canonical import (
    ChatRequest,
    CompletionRequest,
    Delta,
    EmbedReply,
    EmbedRequest,
    Reply,
    Usage,
)
from corral.core.errors import InvalidField
from corral.core.types import BackendKind

__all__ = ["Plan", "StreamHandler", "Whole", "make_plan", "now_rfc3339", "prompt_chars", "text_of"]

Mode = Literal["ollama-pass", "openai-pass", "translate", "local"]
_SSE = b"text/event-stream"


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class StreamHandler(Protocol):
    """Turns the backend's stream into the client's, piece by piece."""

    content_type: bytes
    usage: Usage | None
    finished: bool
    error: str | None

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    def answer_tokens(self) -> int:
        """A guess at the tokens relayed, for when the backend reports none."""
        ...

    def answer_text(self) -> str | None:
        """The text relayed so far, for the backend's tokenizer; None when it was not
        kept (not asked for, or longer than the plan's ``keep``)."""
        ...


@dataclass(slots=True)
class Whole:
    """A whole answer as the client gets it, and what it says of its tokens."""

    body: bytes
    usage: Usage | None = None
    text: str | None = None  # the answer's text, when it was read (for counting)


@dataclass
class Plan:
    """How one attempt goes to one backend and how its answer comes back.

    ``read_whole`` and ``make_stream`` must not hold the plan (or the request context):
    a plan that refers to itself through them is a reference cycle, and each cycle kept
    a request's objects alive until a full collection (seconds long, at 1,000 streams).
    """

    mode: Mode
    path: str
    body: bytes
    read_whole: Callable[[bytes], Whole] = field(default=Whole)
    make_stream: Callable[[int], StreamHandler] | None = None  # given how much to keep
    dropped: list[str] = field(default_factory=list)
    usage: Usage | None = None
    # For an estimate when the backend reports no counts (about 4 characters a token).
    prompt_chars: int = 0
    answer_chars: int = 0
    # For the backend's tokenizer when it reports no counts: the name it knows the model
    # by, how much of the answer to keep (0 = none), and a whole answer's text.
    model: str = ""
    keep: int = 0
    answer_text: str | None = None

    @property
    def translating(self) -> bool:
        return self.mode == "translate"

    @property
    def streams(self) -> bool:
        return self.make_stream is not None

    def stream(self) -> StreamHandler:
        assert self.make_stream is not None
        return self.make_stream(self.keep)

    def whole(self, data: bytes) -> bytes:
        """The client's body for a whole answer; reads its usage (or its text, for an
        estimate and the tokenizer) on the way."""
        got = self.read_whole(data)
        self.usage = got.usage
        if got.text is not None:
            self.answer_chars = len(got.text)
            if got.usage is None and self.keep and len(got.text) <= self.keep:
                self.answer_text = got.text
        return got.body

    def estimate(self, handler: StreamHandler | None = None) -> Usage:
        """Token counts guessed from text, for a backend that gave none."""
        answer = handler.answer_tokens() if handler is not None else self.answer_chars // 4
        return Usage(max(1, self.prompt_chars // 4), answer, estimated=True)


def prompt_chars(req: object) -> int:
    if isinstance(req, ChatRequest):
        return sum(len(m.content) for m in req.messages)
    if isinstance(req, CompletionRequest):
        return len(req.prompt) + len(req.system or "")
    if isinstance(req, EmbedRequest):
        return sum(len(s) for s in req.inputs)
    # Ollama's own request shapes, passed through untouched.
    if isinstance(req, ollama_wire.ChatRequest):
        return sum(len(m.content or "") for m in req.messages or ())
    if isinstance(req, ollama_wire.GenerateRequest):
        return len(req.prompt or "") + len(req.system or "")
    return 0


def text_of(deltas: Iterable[Delta]) -> str:
    """What a tokenizer should count of an answer: its text, reasoning and tool calls."""
    parts: list[str] = []
    for d in deltas:
        _add_text(d, parts)
    return "".join(parts)


def _add_text(d: Delta, parts: list[str]) -> None:
    if d.thinking:
        parts.append(d.thinking)
    if d.content:
        parts.append(d.content)
    for call in d.tool_calls or ():
        parts.append(call.name)
        parts.append(call.arguments)


def _reply_text(reply: Reply) -> str:
    calls = "".join(c.name + c.arguments for c in reply.tool_calls or ())
    return (reply.thinking or "") + reply.content + calls


def make_plan(
    ctx: RequestContext,
    kind: BackendKind,
    upstream_model: str,
    entry: dict[str, Any] | None = None,
    *,
    keep: int = 0,
) -> Plan:
    """The plan for one attempt. ``keep``: how many bytes of the answer to keep for the
    backend's tokenizer, should the backend report no counts (0: keep nothing)."""
    if ctx.dialect == "ollama":
        if kind == "ollama":
            return Plan("ollama-pass", ctx.endpoint, ctx.body)
        if ctx.endpoint == "/api/show":
            return Plan("local", "", _show_from_openai(upstream_model, entry or {}))
        plan = _ollama_to_openai(ctx, upstream_model)
    elif kind == "openai":
        plan = _openai_pass(ctx, upstream_model)
    else:
        n = getattr(ctx.parsed, "n", 1)
        if n != 1:
            raise InvalidField(f"n={n}: Ollama backends answer one choice per request", param="n")
        return _openai_to_ollama(ctx, upstream_model)
    plan.model = upstream_model
    # Only chats and completions are counted (embeddings stay estimated), and a prompt
    # too long to count is estimated: keeping its answer would be no use.
    countable = plan.path != "/v1/embeddings" and len(plan.body) <= keep
    plan.keep = keep if countable else 0
    return plan


def _show_from_openai(model: str, entry: dict[str, Any]) -> bytes:
    """/api/show for a model an OpenAI-kind backend serves: what its model list says."""
    info: dict[str, Any] = {}
    if isinstance(entry.get("max_model_len"), int):
        info["general.context_length"] = entry["max_model_len"]
    return msgspec.json.encode(
        {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": {
                "parent_model": "",
                "format": "",
                "family": "",
                "families": [],
                "parameter_size": "",
                "quantization_level": "",
            },
            "model_info": info,
            "capabilities": ["completion"],
            "remote_model": model,
        }
    )


# -- OpenAI client, OpenAI backend ------------------------------------------------------


class _UsageOnly(msgspec.Struct):
    choices: list[msgspec.Raw] | None = None
    usage: dict[str, Any] | None = None


_usage_only = msgspec.json.Decoder(_UsageOnly)


def _usage_of(data: dict[str, Any] | None) -> Usage | None:
    if not data:
        return None
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


def _openai_pass(ctx: RequestContext, upstream_model: str) -> Plan:
    body = msgspec.json.decode(ctx.body)
    body["model"] = upstream_model
    wants_usage = False
    if ctx.stream:
        options = body.get("stream_options") or {}
        wants_usage = bool(options.get("include_usage"))
        # Corral meters every stream, so it always asks; the client gets the usage
        # chunk only if it asked too.
        body["stream_options"] = {**options, "include_usage": True}
    plan = Plan("openai-pass", ctx.endpoint, msgspec.json.encode(body))
    plan.prompt_chars = prompt_chars(ctx.parsed)
    rename = _renamer(upstream_model, ctx.requested_model)
    embeddings = ctx.endpoint == "/v1/embeddings"

    def whole(data: bytes) -> Whole:
        usage = None
        try:
            usage = _usage_of(_usage_only.decode(data).usage)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            oa.parse_reply(data)  # raises the UpstreamError that names the problem
        text = None
        if usage is None and not embeddings:
            text = _reply_text(oa.parse_reply(data))
        return Whole(rename(data) if rename else data, usage, text)

    plan.read_whole = whole
    plan.make_stream = lambda keep: _SSEPass(wants_usage, rename, keep)
    return plan


def _renamer(upstream: str, requested: str) -> Callable[[bytes], bytes] | None:
    """The client hears back the model name it asked for (an alias, a bare name).

    A byte replacement of the ``"model":"…"`` member keeps pass-through chunks
    otherwise untouched; nothing is done when the names already agree.
    """
    if upstream == requested:
        return None
    old = b'"model":' + msgspec.json.encode(upstream)
    new = b'"model":' + msgspec.json.encode(requested)
    return lambda data: data.replace(old, new)


# How an OpenAI stream's content chunk ends while more follows: `"finish_reason":null}]}`
# (vLLM adds `"stop_reason":null`). A usage or error event ends otherwise.
_MID_STREAM = b"null}]}\n\n"


class _SSEPass:
    """Forwards SSE events as the backend wrote them, reading usage on the way and
    holding back the usage-only event the client did not ask for."""

    content_type = b"text/event-stream"

    def __init__(
        self, forward_usage: bool, rename: Callable[[bytes], bytes] | None = None, keep: int = 0
    ) -> None:
        self._forward_usage = forward_usage
        self._rename = rename
        self._events = 0
        self._buf = b""
        # The events as relayed, for the tokenizer (only if asked, and only up to `keep`).
        self._kept: list[bytes] | None = [] if keep > 0 else None
        self._room = keep
        self.usage: Usage | None = None
        self.finished = False
        self.error: str | None = None

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        if buf.endswith(b"\n\n"):  # the usual case: whole events, nothing left over
            events, self._buf = buf, b""
        else:
            end = max(buf.rfind(b"\n\n"), buf.rfind(b"\r\n\r\n"))
            if end < 0:
                self._buf = buf
                return b""
            cut = end + (4 if buf.startswith(b"\r\n\r\n", end) else 2)
            events, self._buf = buf[:cut], buf[cut:]
        self._events += events.count(b"data:")
        if self._kept is not None:
            self._room -= len(events)
            if self._room >= 0:
                self._kept.append(events)
            else:
                self._kept = None  # too long to count: estimated
        if self._rename is not None:
            events = self._rename(events)
        if events.endswith(_MID_STREAM):
            # A content chunk with more to come (finish_reason null), the last of this
            # batch: no [DONE], and neither the usage nor an error comes before it.
            # Most chunks end so; the searches below cost as much again as the rest.
            return events
        # [DONE] is the stream's last event, so it is looked for only at the end (a search
        # of the whole batch costs as much again as the rest of this method).
        if b"[DONE]" in events[-24:]:
            self.finished = True
        if b'"error"' in events and b'"choices"' not in events:
            self.error = "backend reported an error"
            self.finished = True
        if b'"usage"' not in events:
            return events
        # Usage is in here: read it, event by event, and hold back a usage-only event
        # the client did not ask for. Untouched bytes otherwise.
        kept = []
        held = False
        for event in events.replace(b"\r\n", b"\n").split(b"\n\n"):
            if not event:
                continue
            if self._usage_only(event) and not self._forward_usage:
                held = True
            else:
                kept.append(event + b"\n\n")
        return b"".join(kept) if held else events

    def _usage_only(self, event: bytes) -> bool:
        """Read the usage an event carries; True when it carries nothing else."""
        if b'"usage"' not in event or not event.startswith(b"data:"):
            return False
        try:
            chunk = _usage_only.decode(event[5:].strip())
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return False
        if not chunk.usage:
            return False
        self.usage = _usage_of(chunk.usage)
        return chunk.choices == []

    def close(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    def answer_tokens(self) -> int:
        # Engines stream about one token per event; the role and [DONE] events carry none.
        return max(0, self._events - 2)

    def answer_text(self) -> str | None:
        if self._kept is None:
            return None
        decoder = oa.StreamDecoder()
        deltas = [d for piece in self._kept for d in decoder.feed(piece)]
        return text_of(deltas + decoder.close())


# -- translation, both ways -----------------------------------------------------------


class _Translate:
    """Backend stream → Deltas → client stream, counting what it relays."""

    def __init__(
        self, content_type: bytes, decoder: Any, encoder: Any, on_end: Any, keep: int = 0
    ) -> None:
        self.content_type = content_type
        self._decoder = decoder
        self._encoder = encoder
        self._on_end = on_end
        self.usage: Usage | None = None
        self.finished = False
        self.error: str | None = None
        self.text_chars = 0
        # The text relayed, for the tokenizer (only if asked, and only up to `keep`
        # characters). Strings, not the deltas: a stream keeps no objects for the
        # collector to walk while it runs.
        self._kept: list[str] | None = [] if keep > 0 else None
        self._keep = keep

    def _emit(self, deltas: list[Delta]) -> bytes:
        out = []
        for d in deltas:
            if self.error is not None:
                break  # an error ends the client's stream; what follows is not relayed
            self.text_chars += len(d.content) + len(d.thinking)
            if self._kept is not None:
                if self.text_chars <= self._keep:
                    _add_text(d, self._kept)
                else:
                    self._kept = None  # too long to count: estimated
            if d.usage is not None:
                self.usage = d.usage
            if d.finish_reason is not None:
                self.finished = True
            if d.error is not None:
                self.error = d.error
                self.finished = True
            out.append(self._encoder.encode(d))
        return b"".join(out)

    def feed(self, data: bytes) -> bytes:
        return self._emit(self._decoder.feed(data))

    def close(self) -> bytes:
        tail = self._emit(self._decoder.close())
        if self.error is not None:
            # The error event is the end; SSE still owes its [DONE] marker.
            return tail + (b"data: [DONE]\n\n" if self.content_type == _SSE else b"")
        return tail + (self._on_end(self._encoder) if self.finished else b"")

    def answer_tokens(self) -> int:
        return self.text_chars // 4

    def answer_text(self) -> str | None:
        return None if self._kept is None else "".join(self._kept)


def _reply_usage(reply: Reply | EmbedReply) -> Usage | None:
    if isinstance(reply, EmbedReply):
        return None if reply.prompt_tokens is None else Usage(reply.prompt_tokens, 0)
    return reply.usage


def _openai_to_ollama(ctx: RequestContext, upstream_model: str) -> Plan:
    req = ctx.parsed
    rid, created = ctx.request_id, int(time.time())
    model = ctx.requested_model
    if isinstance(req, EmbedRequest):
        body, dropped = ol.embed_body(req, upstream_model)
        plan = Plan(
            "translate", "/api/embed", body, dropped=dropped, prompt_chars=prompt_chars(req)
        )
        fmt = req.encoding_format

        def embed_whole(data: bytes) -> Whole:
            reply = ol.parse_embed_reply(data)
            reply.model = model
            return Whole(oa.render_embed_reply(reply, encoding_format=fmt), _reply_usage(reply))

        plan.read_whole = embed_whole
        return plan
    kind: Literal["chat", "completion"]
    if isinstance(req, ChatRequest):
        kind, path, (body, dropped) = "chat", "/api/chat", ol.chat_body(req, upstream_model)
        oid = f"chatcmpl-{rid}"
    else:
        assert isinstance(req, CompletionRequest)
        kind, path, (body, dropped) = (
            "completion",
            "/api/generate",
            ol.generate_body(req, upstream_model),
        )
        oid = f"cmpl-{rid}"
    plan = Plan("translate", path, body, dropped=dropped, prompt_chars=prompt_chars(req))

    def whole(data: bytes) -> Whole:
        reply = ol.parse_reply(data, kind=kind)
        reply.model = model
        body = oa.render_reply(reply, kind=kind, id=oid, created=created)
        return Whole(body, _reply_usage(reply), _reply_text(reply))

    plan.read_whole = whole
    plan.make_stream = lambda keep: _Translate(
        _SSE,
        ol.StreamDecoder(kind),
        oa.StreamEncoder(
            kind, id=oid, created=created, model=model, include_usage=req.include_usage
        ),
        lambda enc: enc.end(),
    )
    return plan


def _ollama_to_openai(ctx: RequestContext, upstream_model: str) -> Plan:
    ep = ctx.endpoint
    model = ctx.requested_model
    if ep in ("/api/embed", "/api/embeddings"):
        legacy = ep == "/api/embeddings"
        ereq = ol.parse_embed(ctx.body, legacy=legacy)
        body, dropped = oa.embed_body(ereq, upstream_model)
        plan = Plan(
            "translate", "/v1/embeddings", body, dropped=dropped, prompt_chars=prompt_chars(ereq)
        )

        def embed_whole(data: bytes) -> Whole:
            reply = oa.parse_embed_reply(data)
            reply.model = model
            return Whole(ol.render_embed_reply(reply, legacy=legacy), _reply_usage(reply))

        plan.read_whole = embed_whole
        return plan
    kind: Literal["chat", "completion"]
    creq: ChatRequest | CompletionRequest
    if ep == "/api/chat":
        creq = ol.parse_chat(ctx.body)
        kind, path, (body, dropped) = (
            "chat",
            "/v1/chat/completions",
            oa.chat_body(creq, upstream_model),
        )
    else:
        creq = ol.parse_generate(ctx.body)
        kind = "completion"
        if creq.raw or creq.suffix:
            path, (body, dropped) = "/v1/completions", oa.completion_body(creq, upstream_model)
        else:
            # Ollama wraps a plain prompt in the chat template; /v1/completions would not.
            path, (body, dropped) = (
                "/v1/chat/completions",
                oa.chat_body(completion_as_chat(creq), upstream_model),
            )
    plan = Plan("translate", path, body, dropped=dropped, prompt_chars=prompt_chars(creq))

    def whole(data: bytes) -> Whole:
        reply = oa.parse_reply(data)
        reply.model = model
        body = ol.render_reply(reply, kind=kind, created_at=now_rfc3339())
        return Whole(body, _reply_usage(reply), _reply_text(reply))

    plan.read_whole = whole
    plan.make_stream = lambda keep: _Translate(
        b"application/x-ndjson",
        oa.StreamDecoder(),
        ol.StreamEncoder(kind, model=model, created_at=now_rfc3339()),
        lambda enc: enc.end(),
        keep,
    )
    return plan
