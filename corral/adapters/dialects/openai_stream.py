"""OpenAI-dialect streams (server-sent events): decode a backend's, encode a client's.

The decoder turns ``data:`` events into canonical Deltas. It holds back two things
so the canonical stream stays simple for the Ollama side: tool calls, which arrive
as fragments by ``index`` and are emitted whole with the finish reason (Ollama
clients need whole calls), and the finish itself, which waits for the usage chunk
that follows it (the gateway always asks for one) so one Delta ends the answer.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from corral.adapters.dialects import reasons
from corral.adapters.dialects.common import LineReader, encode
from corral.adapters.dialects.openai_reply import (
    AnswerIn,
    ToolCallIn,
    error_message,
    tool_calls_out,
    usage_out,
)
from corral.core.canonical import Delta, ToolCall

__all__ = ["StreamDecoder", "StreamEncoder"]

_chunk = msgspec.json.Decoder(AnswerIn)
_DONE = b"[DONE]"


class _Partial:
    __slots__ = ("args", "id", "name")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name = ""
        self.args: list[str] = []

    def whole(self, index: int) -> ToolCall:
        return ToolCall(self.name, "".join(self.args) or "{}", self.id, index)


class StreamDecoder(LineReader):
    """SSE bytes from an OpenAI-kind backend (chat or completion) → Deltas.

    ``feed`` takes bytes split anywhere; ``close`` flushes what the stream left
    unfinished (an unterminated last event, held tool calls or finish).
    """

    __slots__ = ("_calls", "_closed_calls", "_data", "_done", "_final", "_usage_seen")

    def __init__(self) -> None:
        super().__init__()
        self._data: list[bytes] = []
        self._calls: dict[int, _Partial] = {}
        self._closed_calls: list[ToolCall] = []
        self._final: Delta | None = None
        self._done = False
        self._usage_seen = False

    def close(self) -> list[Delta]:
        out: list[Delta] = []
        self._rest(out)
        if self._data:
            self._dispatch(out)
        self._flush(out)
        return out

    def _line(self, line: bytes, out: list[Delta]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                self._dispatch(out)
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # Comments (":"), "event:", "id:" and "retry:" lines carry nothing for us.

    def _dispatch(self, out: list[Delta]) -> None:
        data = self._data
        self._data = []
        if self._done:
            return
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        if payload.strip() == _DONE:
            self._done = True
            self._flush(out)
            return
        try:
            chunk = _chunk.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            out.append(Delta(error=f"backend sent a malformed stream event: {exc}"))
            return
        self._chunk(chunk, out)

    def _chunk(self, chunk: AnswerIn, out: list[Delta]) -> None:
        if (err := error_message(chunk)) is not None:
            out.append(Delta(error=err))
            return
        ended = not chunk.choices
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # n > 1 is not translated; the first choice is the answer
            d = choice.delta
            content = (d.content if d is not None else None) or choice.text or ""
            thinking = ""
            if d is not None:
                thinking = d.reasoning_content or d.reasoning or ""
                if d.tool_calls:
                    self._accumulate(d.tool_calls)
            if content or thinking:
                out.append(Delta(content=content, thinking=thinking))
            if choice.finish_reason is not None:
                ended = True
                self._final = Delta(
                    tool_calls=self._complete(),
                    finish_reason=reasons.from_openai(choice.finish_reason),
                )
        # Usage counts only at the end: alongside the finish or in its own chunk.
        if chunk.usage is not None and ended and not self._usage_seen:
            self._usage_seen = True
            usage = chunk.usage.canonical()
            if self._final is not None:
                self._final.usage = usage
                out.append(self._final)
                self._final = None
            else:
                out.append(Delta(usage=usage))

    def _accumulate(self, fragments: list[ToolCallIn]) -> None:
        for frag in fragments:
            call = self._calls.get(frag.index)
            if call is not None and frag.id and call.id and frag.id != call.id:
                # A new call reusing an index (Ollama's /v1 sends whole calls, each
                # possibly at index 0): the earlier one is complete.
                self._closed_calls.append(call.whole(len(self._closed_calls)))
                call = None
            if call is None:
                call = self._calls[frag.index] = _Partial()
            if frag.id:
                call.id = frag.id
            fn = frag.function
            if fn is not None:
                if fn.name:
                    call.name = fn.name
                if fn.arguments:
                    call.args.append(fn.arguments)

    def _complete(self) -> list[ToolCall]:
        calls, base = self._closed_calls, len(self._closed_calls)
        calls += [c.whole(base + n) for n, (_, c) in enumerate(sorted(self._calls.items()))]
        self._closed_calls = []
        self._calls.clear()
        return calls

    def _flush(self, out: list[Delta]) -> None:
        if self._final is not None:
            out.append(self._final)
            self._final = None
        elif self._calls or self._closed_calls:
            # The stream ended without a finish_reason; still hand over whole calls.
            out.append(Delta(tool_calls=self._complete(), finish_reason="tool_calls"))


class StreamEncoder:
    """Deltas → SSE for an OpenAI client.

    The first chunk carries ``role: "assistant"``; the finish reason rides on the
    last content chunk ("tool_calls" once any call was sent); usage follows in a
    chunk with ``choices: []`` only when the client asked (``include_usage``).
    Tool-call ids, when the backend gave none, derive from the response ``id``.
    """

    __slots__ = ("_chat", "_head", "_id", "_include_usage", "_n_calls", "_role_sent", "_usage_sent")

    def __init__(
        self,
        kind: Literal["chat", "completion"],
        *,
        id: str,
        created: int,
        model: str,
        include_usage: bool,
    ) -> None:
        self._chat = kind == "chat"
        obj = b'"chat.completion.chunk"' if self._chat else b'"text_completion"'
        # Every chunk shares this prefix; encode it once.
        self._head = (
            b'data: {"id":' + encode(id) + b',"object":' + obj + b',"created":'
            + encode(created) + b',"model":' + encode(model) + b',"choices":['
        )  # fmt: skip
        self._id = id
        self._include_usage = include_usage
        self._role_sent = False
        self._usage_sent = False
        self._n_calls = 0

    def encode(self, delta: Delta) -> bytes:
        if delta.error is not None:
            err = {"message": delta.error, "type": "server_error", "param": None, "code": None}
            return b"data: " + encode({"error": err}) + b"\n\n"
        out = b""
        choice = self._choice(delta) if self._chat else self._text_choice(delta)
        if choice is not None:
            out = self._head + encode(choice) + b"]}\n\n"
        if delta.usage is not None and self._include_usage and not self._usage_sent:
            self._usage_sent = True
            out += self._head + b'],"usage":' + encode(usage_out(delta.usage)) + b"}\n\n"
        return out

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def _choice(self, delta: Delta) -> dict[str, object] | None:
        d: dict[str, object] = {}
        if delta.content:
            d["content"] = delta.content
        if delta.thinking:
            d["reasoning_content"] = delta.thinking
        if delta.tool_calls:
            d["tool_calls"] = tool_calls_out(delta.tool_calls, self._id, self._n_calls)
            self._n_calls += len(delta.tool_calls)
        finish = reasons.to_openai(delta.finish_reason, tool_calls=self._n_calls > 0)
        if not d and finish is None:
            return None
        if not self._role_sent:
            self._role_sent = True
            d = {"role": "assistant", "content": "", **d}
        return {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}

    def _text_choice(self, delta: Delta) -> dict[str, object] | None:
        finish = reasons.to_openai(delta.finish_reason)
        if not delta.content and finish is None:
            return None
        return {"index": 0, "text": delta.content, "logprobs": None, "finish_reason": finish}
