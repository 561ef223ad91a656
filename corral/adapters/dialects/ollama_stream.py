"""Ollama-dialect streams (NDJSON, one object a line): decode a backend's, encode a
client's."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from corral.adapters.dialects import reasons
from corral.adapters.dialects.common import LineReader, encode
from corral.adapters.dialects.ollama_reply import (
    ChunkIn,
    final_fields,
    message_out,
    timings_in,
    tool_calls_in,
)
from corral.core.canonical import Delta, Timings, Usage
from corral.core.errors import UpstreamError

__all__ = ["StreamDecoder", "StreamEncoder"]

Kind = Literal["chat", "completion"]

_chunk = msgspec.json.Decoder(ChunkIn)


class StreamDecoder(LineReader):
    """NDJSON bytes from an Ollama backend → Deltas.

    Lines may split anywhere. Tool calls arrive whole (often in a ``done: false``
    line) and pass straight on; the ``done: true`` line becomes the Delta with the
    finish reason ("tool_calls" if any call came), usage and timings.
    """

    __slots__ = ("_chat", "_done", "_saw_calls")

    def __init__(self, kind: Kind) -> None:
        super().__init__()
        self._chat = kind == "chat"
        self._saw_calls = False
        self._done = False

    def close(self) -> list[Delta]:
        out: list[Delta] = []
        self._rest(out)
        return out

    def _line(self, line: bytes, out: list[Delta]) -> None:
        if not line.strip() or self._done:
            return
        try:
            c = _chunk.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            out.append(Delta(error=f"backend sent a malformed stream line: {exc}"))
            return
        if c.error is not None:
            out.append(Delta(error=c.error))
            return
        if self._chat and c.message is not None:
            d = Delta(
                content=c.message.content,
                thinking=c.message.thinking or "",
                tool_calls=tool_calls_in(c.message.tool_calls),
            )
        else:
            d = Delta(content=c.response or "", thinking=c.thinking or "")
        if d.tool_calls:
            self._saw_calls = True
        if c.done:
            self._done = True
            d.finish_reason = reasons.from_ollama(c.done_reason, tool_calls=self._saw_calls)
            if c.prompt_eval_count is not None or c.eval_count is not None:
                d.usage = Usage(c.prompt_eval_count or 0, c.eval_count or 0)
            d.timings = timings_in(c)
        elif not (d.content or d.thinking or d.tool_calls):
            return
        out.append(d)


class StreamEncoder:
    """Deltas → NDJSON for an Ollama client.

    Content, thinking and tool calls go out as ``done: false`` lines. The last line
    (``done: true`` with done_reason, counts and durations) is written once both the
    finish reason and the usage are known — an OpenAI backend sends them in separate
    chunks — or by ``end()`` with what is known. ``created_at`` is set by the
    gateway (no clock here) and may be updated between chunks.
    """

    __slots__ = (
        "_chat",
        "_finish",
        "_finished",
        "_head",
        "_head_at",
        "_timings",
        "_usage",
        "created_at",
        "model",
    )

    def __init__(self, kind: Kind, *, model: str, created_at: str = "") -> None:
        self._chat = kind == "chat"
        self.model = model
        self.created_at = created_at
        self._head = b""
        self._head_at: str | None = None
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._timings: Timings | None = None
        self._finished = False

    def encode(self, delta: Delta) -> bytes:
        if delta.error is not None:
            return encode({"error": delta.error}) + b"\n"
        if self._finished:
            return b""
        out = b""
        if delta.content or delta.thinking or delta.tool_calls:
            try:
                out = self._line(delta)
            except UpstreamError as exc:
                return encode({"error": exc.message}) + b"\n"
        if delta.finish_reason is not None:
            self._finish = delta.finish_reason
        if delta.usage is not None:
            self._usage = delta.usage
        if delta.timings is not None:
            self._timings = delta.timings
        if self._finish is not None and self._usage is not None:
            out += self._final()
        return out

    def end(self) -> bytes:
        """The ``done: true`` line if it is still owed (the finish or usage never came)."""
        return b"" if self._finished else self._final()

    def _prefix(self) -> bytes:
        # Every line starts with model and created_at; re-encode only when the time moves.
        if self._head_at != self.created_at:
            self._head_at = self.created_at
            model, at = encode(self.model), encode(self.created_at)
            self._head = b'{"model":' + model + b',"created_at":' + at + b","
        return self._head

    def _line(self, delta: Delta) -> bytes:
        body: dict[str, Any] = {}
        if self._chat:
            body["message"] = message_out(delta.content, delta.thinking, delta.tool_calls)
        else:
            body["response"] = delta.content
            if delta.thinking:
                body["thinking"] = delta.thinking
        body["done"] = False
        return self._prefix() + encode(body)[1:] + b"\n"

    def _final(self) -> bytes:
        self._finished = True
        body: dict[str, Any] = {}
        if self._chat:
            body["message"] = {"role": "assistant", "content": ""}
        else:
            body["response"] = ""
        final_fields(body, self._finish, self._usage, self._timings)
        return self._prefix() + encode(body)[1:] + b"\n"
