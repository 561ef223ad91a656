"""The request audit: what each inference request's audit row keeps (``audit.content``),
and the purge that ends it after ``audit.retention_days``.

With ``off`` none of this runs: the pipelines hold no `ContentAudit` and each request
pays one ``is None`` check. ``metadata`` builds one `ContentLine` when the request
ends: the request's parameters with its text fields taken out (one decode of the
body). ``full`` also keeps the request's text fields and the answer's text: the
pipeline sends through a `Transcript`, which reads the text out of what goes to the
client, in the client's dialect (up to ``audit.max_text_chars``).

The line rides in the request's usage journal line (corral/adapters/store/usage_log.py),
so it is written, replayed and drained exactly like the usage row beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from corral.adapters.store.db import Store
from corral.adapters.store.request_audit import ContentLine, purge_request_audit
from corral.app.asgi import Message, Send
from corral.config.audit import AuditConfig

if TYPE_CHECKING:
    from corral.app.pipeline import RequestContext

__all__ = ["AUDITED_ENDPOINTS", "ContentAudit", "Retention", "Transcript"]

log = logging.getLogger("corral.audit")

AUDITED_ENDPOINTS = frozenset(
    {
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    }
)
_EMBEDDINGS = frozenset({"/api/embed", "/api/embeddings", "/v1/embeddings"})
# The fields of either dialect's request that carry what people wrote (or large opaque
# data derived from it: images, Ollama's context tokens). Everything else is a parameter.
TEXT_FIELDS = frozenset(
    {"messages", "prompt", "system", "suffix", "template", "input", "images", "context", "tools"}
)
_decode = msgspec.json.decode
_encode = msgspec.json.encode


def _image(size: int) -> str:
    return f"<image, {size} characters>"


# Inside those fields, the keys whose strings are what people wrote; other strings
# (roles, types, names, ids) are labels, kept whole up to _LABEL characters.
_TEXT_KEYS = frozenset(
    {"content", "text", "prompt", "system", "suffix", "template", "input", "thinking"}
    | {"arguments", "description"}
)
_LABEL = 256


class _Clip:
    """Copies JSON values, cutting the text once ``left`` characters of it are used up.

    Images (Ollama's ``images`` lists, ``data:`` URLs) become a placeholder naming
    their size, and Ollama's ``context`` its length: they are not text, and would
    dwarf everything else.
    """

    __slots__ = ("cut", "left")

    def __init__(self, left: int) -> None:
        self.left = left
        self.cut = False

    def text(self, value: str) -> str:
        if len(value) <= self.left:
            self.left -= len(value)
            return value
        self.cut = True
        kept, self.left = value[: self.left], 0
        return kept

    def walk(self, value: Any, key: str = "", text: bool = True) -> Any:
        if isinstance(value, str):
            if value.startswith("data:") and ";base64," in value[:100]:
                return _image(len(value))
            if text:
                return self.text(value)
            if len(value) > _LABEL:
                self.cut = True
                return value[:_LABEL]
            return value
        if isinstance(value, list):
            if key == "images":
                return [_image(len(v)) if isinstance(v, str) else v for v in value]
            if key == "context":
                return f"<{len(value)} context tokens>"
            return [self.walk(v, key, text) for v in value]
        if isinstance(value, dict):
            return {k: self.walk(v, k, k in _TEXT_KEYS) for k, v in value.items()}
        return value


# Decoded only to be read once, holding no cycles: kept out of the cycle collector.
class _Said(msgspec.Struct, gc=False):
    content: str | None = None


class _OllamaText(msgspec.Struct, gc=False):
    """The text of an Ollama answer or stream line (chat: message, generate: response)."""

    message: _Said | None = None
    response: str | None = None


class _Choice(msgspec.Struct, gc=False):
    index: int = 0
    delta: _Said | None = None  # a chat stream's event
    message: _Said | None = None  # a whole chat answer
    text: str | None = None  # completions, streamed or whole


class _OpenAIText(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None


_ollama_texts = msgspec.json.Decoder(list[_OllamaText])
_openai_texts = msgspec.json.Decoder(list[_OpenAIText])
_ollama_text = msgspec.json.Decoder(_OllamaText)
_openai_text = msgspec.json.Decoder(_OpenAIText)
_DIGEST_BYTES = 64 * 1024  # raw answer bytes held before they are read down to text


def _text_of(item: _OllamaText | _OpenAIText) -> str:
    if isinstance(item, _OllamaText):
        if item.message is not None:
            return item.message.content or ""
        return item.response or ""
    parts = []
    for choice in item.choices or ():
        if choice.index != 0:
            continue  # n > 1: the first choice stands for the answer
        said = choice.delta or choice.message
        parts.append((said.content or "") if said is not None else (choice.text or ""))
    return "".join(parts)


class Transcript:
    """Sends to the client and keeps the answer's text (``audit.content: full``).

    The answer's bytes are only collected as they pass (a list append per chunk); every
    64 KiB, and at the end, the complete lines are read down to their text in one
    decode, so a long stream holds at most that much beside its text, and the text
    stops growing at ``left`` characters.
    """

    __slots__ = ("_ctx", "_raw", "_send", "_size", "_texts", "left", "ok", "truncated")

    def __init__(self, ctx: RequestContext, left: int) -> None:
        self._ctx = ctx
        self._send = ctx.send
        self._raw: list[bytes] = []
        self._size = 0
        self._texts: list[str] = []
        self.left = left
        self.ok = False  # a 200 answer started
        self.truncated = False

    async def send(self, message: Message) -> None:
        await self.keep(message)(message)

    def keep(self, message: Message) -> Send:
        """Take what ``message`` carries of the answer; the send to pass it on with."""
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body and self.ok and self.left > 0:
                self._raw.append(body)
                self._size += len(body)
                if self._size >= _DIGEST_BYTES and self._ctx.stream:
                    self._digest(final=False)
        elif message["type"] == "http.response.start":
            self.ok = message["status"] == 200
        return self._send

    def _digest(self, *, final: bool) -> None:
        data = b"".join(self._raw)
        cut = len(data) if final else data.rfind(b"\n") + 1
        self._raw = [data[cut:]] if cut < len(data) else []
        self._size = len(data) - cut
        if not self._ctx.stream:
            lines = [data]  # a whole answer: one JSON document
        else:
            lines = [line for line in data[:cut].split(b"\n") if line and not line.isspace()]
            if self._ctx.dialect == "openai":
                # SSE: the data lines carry the events; [DONE] carries no text.
                lines = [
                    line[5:].strip()
                    for line in lines
                    if line.startswith(b"data:") and not line.rstrip().endswith(b"[DONE]")
                ]
        if lines:
            self._keep(self._decode(lines))

    def _decode(self, lines: list[bytes]) -> list[str]:
        openai = self._ctx.dialect == "openai"
        many = _openai_texts if openai else _ollama_texts
        one = _openai_text if openai else _ollama_text
        try:  # one decode for the whole batch
            return [_text_of(item) for item in many.decode(b"[" + b",".join(lines) + b"]")]
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        texts = []
        for line in lines:  # some line is not an answer's (an error, a torn line)
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                texts.append(_text_of(one.decode(line)))
        return texts

    def _keep(self, texts: list[str]) -> None:
        for text in texts:
            if len(text) >= self.left:
                self.truncated = self.truncated or len(text) > self.left
                self._texts.append(text[: self.left])
                self.left = 0
                self._raw, self._size = [], 0
                return
            self._texts.append(text)
            self.left -= len(text)

    def text(self) -> str | None:
        """The answer's text, or None when there was no 200 answer with text to read."""
        if not self.ok or self._ctx.endpoint in _EMBEDDINGS:
            return None
        if self._raw:
            self._digest(final=True)
        return "".join(self._texts)


class ContentAudit:
    """What ``audit.content`` keeps of each inference request; None on the gateway when off."""

    def __init__(self, cfg: AuditConfig) -> None:
        self.level = cfg.content
        self.full = cfg.content == "full"
        self.max_chars = cfg.max_text_chars

    @staticmethod
    def covers(endpoint: str) -> bool:
        return endpoint in AUDITED_ENDPOINTS

    def transcribe(self, ctx: RequestContext) -> Send:
        """Route the request's replies through a `Transcript`; the send to use from now."""
        transcript = Transcript(ctx, self.max_chars)
        ctx.transcript = transcript
        ctx.send = transcript.send
        return transcript.send

    def line(self, ctx: RequestContext) -> ContentLine:
        """The audit's part of the request's journal line, built as the request ends."""
        try:
            body = _decode(ctx.body) if ctx.body else {}
        except msgspec.DecodeError:
            body = None  # the request was refused for it (400); nothing to keep
        if not isinstance(body, dict):
            return ContentLine(self.level, {"unreadable": True} if ctx.body else {})
        params = {k: v for k, v in body.items() if k not in TEXT_FIELDS}
        omitted = sorted(k for k in body if k in TEXT_FIELDS)
        if omitted:
            params["omitted"] = omitted
        if not self.full:
            return ContentLine(self.level, params)
        clip = _Clip(self.max_chars)
        texts = {k: clip.walk(body[k], k) for k in omitted}
        prompt = _encode(texts).decode() if texts else None
        transcript = ctx.transcript
        response = transcript.text() if isinstance(transcript, Transcript) else None
        truncated = clip.cut or (isinstance(transcript, Transcript) and transcript.truncated)
        return ContentLine(self.level, params, prompt, response, truncated)


class Retention:
    """Deletes request audit rows past ``audit.retention_days``, every ``purge_interval_s``.

    Runs whatever ``audit.content`` is now: rows kept while it was on still age out
    after it was turned off. With content on it also starts a new usage journal
    segment each time (``rotate``), so the text in journal lines leaves the local
    disk within about one interval, not when a quiet gateway's segment fills.
    """

    def __init__(
        self, store: Store, cfg: AuditConfig, rotate: Callable[[], object] | None = None
    ) -> None:
        self.store = store
        self.keep = timedelta(days=cfg.retention_days)
        self.interval_s = cfg.purge_interval_s
        self.rotate = rotate
        self.purged = 0  # rows this process deleted
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def purge(self, now: datetime | None = None) -> int:
        """One pass: delete what is older than the retention period at ``now``."""
        gone = await purge_request_audit(self.store, (now or datetime.now(UTC)) - self.keep)
        self.purged += gone
        if gone:
            log.info("request audit: purged %d rows older than %s", gone, self.keep)
        return gone

    async def _run(self) -> None:
        while True:
            if self.rotate is not None:
                self.rotate()
            try:
                await self.purge()
            except Exception as exc:  # the database is away: try again next interval
                log.warning(
                    "request audit purge failed, next try in %.0f s: %s", self.interval_s, exc
                )
            await asyncio.sleep(self.interval_s)
