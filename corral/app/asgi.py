"""Small ASGI helpers for the hot path: read a bounded body, answer, watch the client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from corral.core.errors import CorralError, PayloadTooLarge

__all__ = [
    "DirectBody",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "Watchdog",
    "corked",
    "direct_body",
    "error_headers",
    "read_body",
    "response_start",
    "send_error",
    "send_response",
    "watch_client",
    "watch_disconnect",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json; charset=utf-8"


class ClientGone(Exception):
    """The client closed the connection before we had its whole request."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing (413) anything over ``limit`` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = 0
            if declared > limit:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds {limit} bytes")
            break
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(response_start(status, len(body), content_type, headers))
    await send({"type": "http.response.body", "body": body})


def response_start(
    status: int,
    length: int,
    content_type: bytes = JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Message:
    """The start of a whole response of ``length`` bytes."""
    raw = [(b"content-type", content_type), (b"content-length", str(length).encode())]
    if headers:
        raw.extend(headers)
    return {"type": "http.response.start", "status": status, "headers": raw}


async def send_error(
    send: Send,
    error: CorralError,
    dialect: str = "ollama",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send_response(
        send, error.status, error.body(dialect), headers=error_headers(error, headers)
    )


def error_headers(
    error: CorralError, headers: list[tuple[bytes, bytes]] | None = None
) -> list[tuple[bytes, bytes]]:
    """The headers ``error`` asks for (Retry-After, ...), then ``headers``."""
    extra = [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    if headers:
        extra.extend(headers)
    return extra


async def watch_disconnect(receive: Receive, on_gone: Callable[[], None]) -> None:
    """Call ``on_gone`` when the client disconnects (after the body was read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_gone()
            return


def watch_client(receive: Receive, send: Send, on_gone: Callable[[], None]) -> Callable[[], object]:
    """Call ``on_gone`` if the client disconnects (after the body was read), until the
    returned ``stop`` is called; ``stop`` must be called, however the request ends.

    On uvicorn's own cycle this costs no task: uvicorn sets the request's event when
    the connection is lost, and a `_Departure` in its place sees that. Elsewhere a
    task waits on ``receive`` (`watch_disconnect`).
    """
    cycle = _uvicorn_cycle(send)
    event = getattr(cycle, "message_event", None)
    if (
        cycle is None
        or type(event) is not asyncio.Event
        or not hasattr(cycle, "flow")
        or not hasattr(cycle, "disconnected")  # read in `_Departure.set`
    ):
        task = asyncio.get_running_loop().create_task(watch_disconnect(receive, on_gone))
        return task.cancel
    departure = cycle.message_event = _Departure(cycle, on_gone)
    if event.is_set():
        departure.set()
    cycle.flow.resume_reading()  # as uvicorn's receive does: a lost connection is seen
    return departure.stop


class _Departure(asyncio.Event):
    """Stands in for uvicorn's per-request event once the body is read: nothing waits on
    it any more, but uvicorn sets it when the connection is lost, and then the cycle is
    marked disconnected (unless the response was complete)."""

    def __init__(self, cycle: Any, on_gone: Callable[[], None]) -> None:
        super().__init__()
        self._cycle: Any = cycle
        self._on_gone: Callable[[], None] | None = on_gone

    def set(self) -> None:
        super().set()
        on_gone = self._on_gone
        if on_gone is not None and self._cycle.disconnected:
            self.stop()
            on_gone()

    def stop(self) -> None:
        """No more calls; and no reference loop (cycle → event → callback → cycle)."""
        self._on_gone = None
        self._cycle = None


class DirectBody:
    """Writes a streamed response's body pieces straight to uvicorn's transport.

    Each piece framed as an HTTP/1.1 chunk exactly as uvicorn's ``send`` frames it, but
    with no ASGI message, no coroutine and no await: it can run inside the upstream
    protocol's callback (see ``RawResponse.pipe``). The response's start and its end
    still go through ``send``, which keeps uvicorn's own state right.
    """

    __slots__ = ("_cycle", "_flow", "_write")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._flow = cycle.flow
        self._write = cycle.transport.write

    def write(self, data: bytes) -> bool:
        """Send one piece (never an empty one: that would end the body); False when the
        client is not keeping up, so the caller stops reading until ``drain``."""
        if not self._cycle.disconnected:
            self._write(b"%x\r\n%b\r\n" % (len(data), data))
        return not self._flow.write_paused

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written (or left)."""
        if self._flow.write_paused and not self._cycle.disconnected:
            await self._flow.drain()


_UVICORN_CYCLE = "uvicorn.protocols.http.httptools_impl"


def _uvicorn_cycle(send: Send) -> Any:
    """The uvicorn (httptools) request cycle ``send`` belongs to, with a transport; None
    for another server's send or one a middleware (CORS) wraps."""
    cycle: Any = getattr(send, "__self__", None)
    if cycle is None or type(cycle).__module__ != _UVICORN_CYCLE or not hasattr(cycle, "transport"):
        return None
    return cycle


def direct_body(send: Send) -> DirectBody | None:
    """A `DirectBody` for a response already started through ``send``, when ``send`` is
    uvicorn's own (httptools) and the body is chunked; None otherwise (another server,
    a wrapping middleware such as CORS, HTTP/1.0): then every piece goes through ``send``.
    """
    cycle = _uvicorn_cycle(send)
    if (
        cycle is None
        or getattr(cycle, "chunked_encoding", None) is not True
        or not getattr(cycle, "response_started", False)
        or getattr(cycle, "response_complete", True)
        or cycle.scope.get("method") == "HEAD"
        or not hasattr(cycle, "flow")
    ):
        return None
    return DirectBody(cycle)


class _Corked:
    """Stands in for uvicorn's transport while `corked` is on: gathers the writes (and a
    close) to hand them on together."""

    __slots__ = ("_parts", "_real", "closing")

    def __init__(self, real: Any) -> None:
        self._real = real
        self._parts: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def close(self) -> None:
        self.closing = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def flush(self) -> None:
        real = self._real
        if self._parts and not real.is_closing():
            real.write(self._parts[0] if len(self._parts) == 1 else b"".join(self._parts))
        if self.closing:
            real.close()


@contextlib.contextmanager
def corked(send: Send) -> Iterator[None]:
    """Within the block, what uvicorn writes for this response leaves in one system call
    at its end: a whole answer's head and body. Each write is a loopback ``send`` that
    also wakes the client; one instead of two saved 25-35 µs a request (BENCHMARKS.md).
    Does nothing when ``send`` is not uvicorn's own (another server, a wrapping
    middleware)."""
    cycle = _uvicorn_cycle(send)
    if cycle is None:
        yield
        return
    real = cycle.transport
    gather = cycle.transport = _Corked(real)
    try:
        yield
    finally:
        cycle.transport = real
        gather.flush()


class Watchdog:
    """Cancels a task when it stalls: no ``touch()`` for ``idle`` seconds, or past a deadline.

    One timer per request, re-armed only when it fires, so touching it per chunk
    costs a float store and nothing more.
    """

    __slots__ = (
        "_due",
        "_handle",
        "_loop",
        "_task",
        "deadline",
        "fired",
        "idle",
        "last",
        "started",
    )

    def __init__(self, idle: float, total: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        now = self._loop.time()
        self.started = self.last = now
        self.idle = idle
        self.deadline = now + total
        self.fired: str | None = None
        self._due = min(now + idle, self.deadline)
        self._handle = self._loop.call_at(self._due, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def set_idle(self, idle: float) -> None:
        """Change the allowed silence (e.g. from first-byte to between-chunks). The timer
        is re-armed only when it must fire sooner; one due later re-arms itself when the
        present timer fires early."""
        self.idle = idle
        due = min(self.last + idle, self.deadline)
        if due < self._due:
            self._arm(due)

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self.deadline:
            self.fired = "request"
        elif now >= self.last + self.idle:
            self.fired = "idle"
        else:
            self._arm(min(self.last + self.idle, self.deadline))
            return
        self._task.cancel()

    def _arm(self, due: float) -> None:
        self._handle.cancel()
        self._due = due
        self._handle = self._loop.call_at(due, self._check)

    def stop(self) -> None:
        self._handle.cancel()
