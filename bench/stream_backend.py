"""A paced streaming backend that costs little per chunk: Ollama NDJSON and OpenAI SSE.

    python bench/stream_backend.py [--port 11600] [--chunks 50] [--interval-ms 20]

One process, uvloop, a hand-written HTTP/1.1 server (keep-alive, Content-Length
bodies) and ONE timer driving every open stream: streams sit in per-tick buckets by
their next due time, and each tick writes a precomputed HTTP chunk to every stream due
in it. Nothing is encoded per chunk: the chunk frames of a tick are built once (they
differ only in `created_at` and the word) and shared by all streams of that tick.

Serves, for the model `bench` (`bench:latest` in Ollama's list):

    POST /api/chat               NDJSON, `{"model":..,"created_at":..,"message":{..},"done":false}`
    POST /v1/chat/completions    SSE `chat.completion.chunk` events; a usage-only event when
                                 `stream_options.include_usage` is set; then `data: [DONE]`
    GET  /api/tags /api/version /v1/models
    POST /bench/pace             body `MS`: the interval for every stream, open ones too

Pacing per request: `--chunks` chunks at `--interval-ms`, the first one `--first-ms` after
the request. A request may override them by putting `bench:chunks=N,interval=MS,first=MS`
in a message's content (the load generator uses that to change the rate without a
restart; the text survives translation, unlike an extra field or header).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
from datetime import UTC, datetime

__all__ = ["StreamServer", "main"]

MODEL_OLLAMA = "bench:latest"
MODEL_OPENAI = "bench"
WORDS = [" lorem", " ipsum", " dolor", " sit", " amet", " consectetur", " adipiscing", " elit"]
DIRECTIVE = re.compile(rb"bench:chunks=(\d+),interval=([\d.]+)(?:,first=([\d.]+))?")

_TAGS = json.dumps(
    {
        "models": [
            {
                "name": MODEL_OLLAMA,
                "model": MODEL_OLLAMA,
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 1000,
                "digest": "0" * 64,
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "bench",
                    "families": ["bench"],
                    "parameter_size": "1M",
                    "quantization_level": "Q8_0",
                },
            }
        ]
    },
    separators=(",", ":"),
).encode()
_VERSION = b'{"version":"0.9.0"}'
_MODELS = json.dumps(
    {
        "object": "list",
        "data": [{"id": MODEL_OPENAI, "object": "model", "created": 0, "owned_by": "bench"}],
    },
    separators=(",", ":"),
).encode()


def _whole(status: bytes, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


_HEAD_NDJSON = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_HEAD_SSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_END = b"0\r\n\r\n"
_NOT_FOUND = _whole(b"404 Not Found", b'{"error":"not found"}')


class Templates:
    """Chunk frames for the current tick; rebuilt when the clock moves on."""

    def __init__(self) -> None:
        self._stamp = ""
        self._second = -1
        self.ollama: list[bytes] = []
        self.openai: list[bytes] = []
        self.openai_role = b""
        self.openai_stop = b""
        self.openai_id = b"chatcmpl-bench"

    def refresh(self) -> None:
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        if stamp != self._stamp:
            self._stamp = stamp
            self.ollama = [
                _frame(
                    b'{"model":"%b","created_at":"%b","message":{"role":"assistant",'
                    b'"content":%b},"done":false}\n'
                    % (MODEL_OLLAMA.encode(), stamp.encode(), json.dumps(w).encode())
                )
                for w in WORDS
            ]
        second = int(now)
        if second != self._second:
            self._second = second
            head = (
                b'data: {"id":"%b","object":"chat.completion.chunk","created":%d,"model":"%b",'
                % (
                    self.openai_id,
                    second,
                    MODEL_OPENAI.encode(),
                )
            )
            self.openai = [
                _frame(
                    head + b'"choices":[{"index":0,"delta":{"content":%b},"logprobs":null,'
                    b'"finish_reason":null}]}\n\n' % json.dumps(w).encode()
                )
                for w in WORDS
            ]
            self.openai_role = _frame(
                head + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                b'"logprobs":null,"finish_reason":null}]}\n\n'
            )
            self.openai_stop = _frame(
                head + b'"choices":[{"index":0,"delta":{},"logprobs":null,'
                b'"finish_reason":"stop"}]}\n\n'
            )
            self._head = head

    def ollama_final(self, prompt_tokens: int, n: int, elapsed_ns: int) -> bytes:
        body = json.dumps(
            {
                "model": MODEL_OLLAMA,
                "created_at": self._stamp,
                "message": {"role": "assistant", "content": ""},
                "done_reason": "stop",
                "done": True,
                "total_duration": elapsed_ns,
                "load_duration": 1000,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": 1000,
                "eval_count": n,
                "eval_duration": elapsed_ns,
            },
            separators=(",", ":"),
        ).encode()
        return _frame(body + b"\n") + _END

    def openai_final(self, prompt_tokens: int, n: int, usage: bool) -> bytes:
        out = self.openai_stop
        if usage:
            out += _frame(
                self._head + b'"choices":[],"usage":{"prompt_tokens":%d,"total_tokens":%d,'
                b'"completion_tokens":%d}}\n\n' % (prompt_tokens, prompt_tokens + n, n)
            )
        return out + _frame(b"data: [DONE]\n\n") + _END


class Stream:
    __slots__ = ("due", "left", "n", "openai", "prompt_tokens", "proto", "started", "step", "usage")

    def __init__(
        self,
        proto: Protocol,
        openai: bool,
        chunks: int,
        step: int,
        usage: bool,
        prompt_tokens: int,
    ) -> None:
        self.proto = proto
        self.openai = openai
        self.left = chunks
        self.n = 0
        self.step = step
        self.usage = usage
        self.prompt_tokens = prompt_tokens
        self.started = time.monotonic_ns()
        self.due = 0


class StreamServer:
    """Owns the tick loop and the buckets of streams waiting for their next chunk."""

    def __init__(self, chunks: int, interval_ms: float, first_ms: float, tick_ms: float) -> None:
        self.chunks = chunks
        self.interval_ms = interval_ms
        self.first_ms = first_ms
        self.tick = tick_ms / 1000.0
        self.buckets: dict[int, list[Stream]] = {}
        self.templates = Templates()
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.next_tick: int | None = None
        self.step = 1
        self.set_interval(interval_ms)
        self.open = 0
        self.streams_started = 0
        self.chunks_sent = 0

    def set_interval(self, interval_ms: float) -> None:
        """New pace for every stream without its own, including the ones already open."""
        self.interval_ms = interval_ms
        self.step = max(1, round(interval_ms / 1000.0 / self.tick))

    def _tick_now(self) -> int:
        return int((self.loop.time() - self.t0) / self.tick)

    def schedule(self, stream: Stream, tick: int) -> None:
        stream.due = tick
        bucket = self.buckets.get(tick)
        if bucket is None:
            self.buckets[tick] = [stream]
        else:
            bucket.append(stream)
        if self.next_tick is None or (
            tick < self.next_tick and self.next_tick >= 0
        ):  # (-1 while _run runs)
            if self.timer is not None:
                self.timer.cancel()
            self.next_tick = tick
            self.timer = self.loop.call_at(self.t0 + tick * self.tick, self._run)

    def start(self, proto: Protocol, openai: bool, body: bytes) -> None:
        chunks, first, step = self.chunks, self.first_ms, 0  # step 0: the server's pace
        if (m := DIRECTIVE.search(body)) is not None:
            chunks, interval = int(m.group(1)), float(m.group(2))
            first = float(m.group(3)) if m.group(3) else interval
            step = max(1, round(interval / 1000.0 / self.tick))
        usage = b'"include_usage":true' in body.replace(b" ", b"")
        stream = Stream(proto, openai, chunks, step, usage, max(1, len(body) // 4))
        proto.stream = stream
        self.open += 1
        self.streams_started += 1
        first_tick = self._tick_now() + max(1, round(first / 1000.0 / self.tick))
        self.schedule(stream, first_tick)

    def _run(self) -> None:
        # call_at may fire a hair early: count the tick it was set for as come.
        now = max(self._tick_now(), self.next_tick or 0)
        self.timer = None
        self.next_tick = -1  # streams re-scheduled below set no timer: _run sets one after
        due = sorted(t for t in self.buckets if t <= now)
        if due:
            tpl = self.templates
            tpl.refresh()
            for t in due:
                for s in self.buckets.pop(t):
                    self._emit(s, tpl, now)
        self.next_tick = None
        if self.buckets:
            nxt = min(self.buckets)
            self.next_tick = nxt
            self.timer = self.loop.call_at(self.t0 + nxt * self.tick, self._run)

    def _emit(self, s: Stream, tpl: Templates, now: int) -> None:
        proto = s.proto
        if proto.stream is not s or proto.transport is None:
            self.open -= 1
            return  # the client went away
        n = s.n
        if s.left > 0:
            out = (tpl.openai if s.openai else tpl.ollama)[n % len(WORDS)]
            if n == 0:  # headers go out with the first chunk, as Ollama's and vLLM's do
                out = (_HEAD_SSE + tpl.openai_role if s.openai else _HEAD_NDJSON) + out
            s.n = n + 1
            s.left -= 1
            self.chunks_sent += 1
            proto.transport.write(out)
            nxt = s.due + (s.step or self.step)
            self.schedule(s, nxt if nxt > now else now + 1)
            return
        # One interval after the last word: the final chunk(s), as engines send them.
        if s.openai:
            out = tpl.openai_final(s.prompt_tokens, n, s.usage)
        else:
            out = tpl.ollama_final(s.prompt_tokens, n, time.monotonic_ns() - s.started)
        proto.transport.write(out)
        self.open -= 1
        proto.stream = None
        proto.resume()


class Protocol(asyncio.Protocol):
    """One keep-alive connection: parse a request, answer it, then read the next one."""

    def __init__(self, server: StreamServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.stream: Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.stream is None:
            self.resume()

    def resume(self) -> None:
        """Handle whatever complete requests are buffered (one stream at a time)."""
        while self.stream is None and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            self.handle(method, path, body)

    def handle(self, method: bytes, path: bytes, body: bytes) -> None:
        assert self.transport is not None
        write = self.transport.write
        if path == b"/bench/pace":  # the load generator changes every stream's interval
            self.server.set_interval(float(body or b"0") or self.server.interval_ms)
            write(_whole(b"200 OK", b'{"interval_ms":%g}' % self.server.interval_ms))
            return
        if method == b"GET":
            reply = {b"/api/tags": _TAGS, b"/api/version": _VERSION, b"/v1/models": _MODELS}.get(
                path
            )
            write(_whole(b"200 OK", reply) if reply is not None else _NOT_FOUND)
            return
        if path not in (b"/api/chat", b"/v1/chat/completions"):
            write(_NOT_FOUND)
            return
        openai = path == b"/v1/chat/completions"
        compact = body.replace(b" ", b"")
        streamed = b'"stream":true' in compact if openai else b'"stream":false' not in compact
        if streamed:
            self.server.start(self, openai, body)
            return
        text = "".join(WORDS[i % len(WORDS)] for i in range(self.server.chunks))
        if openai:
            reply = {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL_OPENAI,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": 50, "total_tokens": 58},
            }
        else:
            reply = {
                "model": MODEL_OLLAMA,
                "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "message": {"role": "assistant", "content": text},
                "done_reason": "stop",
                "done": True,
                "prompt_eval_count": 8,
                "eval_count": self.server.chunks,
            }
        write(_whole(b"200 OK", json.dumps(reply, separators=(",", ":")).encode()))


async def serve(args: argparse.Namespace) -> None:
    server = StreamServer(args.chunks, args.interval_ms, args.first_ms, args.tick_ms)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: Protocol(server), args.host, args.port, backlog=4096, reuse_address=True
    )
    port = srv.sockets[0].getsockname()[1]
    print(f"stream backend on http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    srv.close()
    print(f"streams {server.streams_started}, chunks {server.chunks_sent}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=11600)
    ap.add_argument("--chunks", type=int, default=50, help="content chunks per stream")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="delay between chunks")
    ap.add_argument("--first-ms", type=float, default=20.0, help="delay before the first chunk")
    ap.add_argument("--tick-ms", type=float, default=1.0, help="timer resolution")
    args = ap.parse_args()
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    with contextlib.suppress(KeyboardInterrupt):
        if uvloop is not None:
            uvloop.run(serve(args))
        else:
            asyncio.run(serve(args))


if __name__ == "__main__":
    main()
