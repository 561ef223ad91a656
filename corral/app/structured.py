"""Structured outputs: checking answers against the JSON format or schema asked for.

Whole answers are judged before they are sent (marked in ``X-Corral-Schema``, or
retried once); streams are read on their way to the client and, when the answer
fails, end with an error in the client's dialect instead of a success.
"""

from __future__ import annotations

from typing import Literal

from corral.adapters.dialects import ollama as ollama_dialect
from corral.adapters.dialects import openai as openai_dialect
from corral.adapters.schema_check import SchemaCheck
from corral.app.pipeline import RequestContext

__all__ = ["DONE", "SchemaRetry", "SchemaTap", "judge_whole", "schema_for"]

DONE = b"data: [DONE]\n\n"
_NOT_TEXT = frozenset({"/api/embed", "/api/embeddings", "/v1/embeddings", "/api/show"})


class SchemaRetry(Exception):
    """A non-streamed answer missed its schema and one retry is allowed."""


def schema_for(ctx: RequestContext) -> SchemaCheck | None:
    """The check the request asked for, if any (a 400 for a schema that is not one)."""
    if not ctx.gw.settings.structured.check or ctx.endpoint in _NOT_TEXT:
        return None
    fmt = getattr(ctx.parsed, "format", None)
    if fmt is None or fmt == "":
        return None
    param = "response_format" if ctx.dialect == "openai" else "format"
    return SchemaCheck(fmt, param=param)


def _answer_text(ctx: RequestContext, body: bytes) -> str:
    """The generated text of a whole answer in the client's dialect."""
    if ctx.dialect == "openai":
        return openai_dialect.parse_reply(body).content
    kind: Literal["chat", "completion"] = "chat" if ctx.endpoint == "/api/chat" else "completion"
    return ollama_dialect.parse_reply(body, kind=kind).content


def judge_whole(ctx: RequestContext, body: bytes) -> None:
    assert ctx.schema is not None
    problem = ctx.schema.problem(_answer_text(ctx, body))
    if problem is None:
        ctx.extra_headers.append((b"x-corral-schema", b"valid"))
        return
    structured = ctx.gw.settings.structured
    retries_left = ctx.attempts < ctx.gw.settings.retry.attempts
    if structured.on_invalid == "retry" and not ctx.schema_retried and retries_left:
        raise SchemaRetry(problem)
    ctx.error = f"answer does not match the requested format: {problem}"
    ctx.extra_headers.append((b"x-corral-schema", f"invalid: {problem}"[:300].encode()))


class SchemaTap:
    """Reads the text a stream carries to the client, to check it when the stream ends.

    On SSE it holds back ``data: [DONE]`` so a failed check can still be reported
    before the stream's end marker.
    """

    def __init__(self, ctx: RequestContext) -> None:
        assert ctx.schema is not None
        self._check = ctx.schema
        self._sse = ctx.dialect == "openai"
        kind: Literal["chat", "completion"] = (
            "chat" if ctx.endpoint in ("/api/chat", "/v1/chat/completions") else "completion"
        )
        self._decoder = (
            openai_dialect.StreamDecoder() if self._sse else ollama_dialect.StreamDecoder(kind)
        )
        self._text: list[str] = []
        self.held_done = False

    def feed(self, data: bytes) -> bytes:
        if self._sse and DONE in data:
            data = data.replace(DONE, b"")
            self.held_done = True
        for delta in self._decoder.feed(data):
            self._text.append(delta.content)
        return data

    def problem(self) -> str | None:
        for delta in self._decoder.close():
            self._text.append(delta.content)
        problem = self._check.problem("".join(self._text))
        return None if problem is None else f"answer does not match the requested format: {problem}"
