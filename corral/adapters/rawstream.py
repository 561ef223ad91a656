"""A lean HTTP/1.1 client for the hot case: one streamed answer from a backend.

aiohttp spends several Python layers per chunk read (its stream reader, a re-entrant
``resume_reading`` on every read, an iterator wrapper). Here a protocol hands the
httptools parser's body pieces straight to one waiting reader: one future per wake-up,
and everything buffered by then is taken at once. Keep-alive connections are pooled
per backend; a connection is reused only after a complete answer that allows it.

``RawResponse.pipe`` goes one step further for the relay: the body pieces go to a
callback run inside the protocol's ``data_received``, so a relayed chunk costs no
future, no task wake-up and no coroutine frames; the waiting task wakes only when the
answer ends, fails, or the callback asks it to (a client that reads too slowly).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import urlsplit

import httptools

__all__ = ["RawPool", "RawResponse", "Sink"]

_HIGH_WATER = 1 << 18  # stop reading the backend while this much waits for the client

# Takes each body piece as it arrives; False asks the piping task to look (and stops
# the piping until it calls ``pipe`` again).
Sink = Callable[[bytes], bool]


class _Conn(asyncio.Protocol):
    """One keep-alive connection, parsing one answer at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.in_use = True
        # One parser for the connection's life: llhttp starts on the next answer by
        # itself after a complete one (a connection is reused only then), and a new
        # parser would hold a new set of bound callbacks each answer.
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.reset()

    def reset(self) -> None:
        """Ready for the next answer on this connection."""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body.clear()
        self.size = 0
        self.complete = False
        self.keep_alive = False
        self.error: Exception | None = None
        self.got_headers = False
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.sink: Sink | None = None
        self.sink_error: BaseException | None = None

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_use:
            self.abort()  # bytes nobody asked for: never mistake them for the next answer
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = ConnectionError(f"backend sent bad HTTP: {exc}")
            self.abort()
        sink = self.sink
        if sink is not None:
            if self.body:
                try:
                    more = sink(self.take())
                except Exception as exc:  # raised again in the piping task
                    self.sink_error = exc
                    more = False
                if not more:
                    self.sink = None
                    self._pause()
                    self._wake()
                    return
            if self.complete or self.error is not None:
                self._wake()
            return
        if self.size > _HIGH_WATER:
            self._pause()
        self._wake()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None and not self.complete:
            self.paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.got_headers and not self.complete and self._until_close():
            self.complete = True  # a body delimited by the end of the connection
        elif not self.complete and self.error is None:
            self.error = ConnectionResetError("backend closed the connection")
        self._wake()

    def _until_close(self) -> bool:
        h = self.headers
        return "content-length" not in h and "chunked" not in h.get("transfer-encoding", "")

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.got_headers = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    # for the reader

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = waiter = self.loop.create_future()
        await waiter

    def take(self) -> bytes:
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()  # the same list again: no new object for the collector per piece
        self.size = 0
        if self.paused and self.sink is None:
            self._resume()
        return data


class RawResponse:
    """A streamed answer read off one pooled connection."""

    __slots__ = ("_conn", "_pool", "status")

    def __init__(self, pool: RawPool, conn: _Conn) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status

    @property
    def content_type(self) -> str:
        return self._conn.headers.get("content-type", "application/json")

    def header(self, name: str) -> str | None:
        return self._conn.headers.get(name.lower())

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take()
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait()

    async def pipe(self, sink: Sink) -> bool:
        """Hand the body to ``sink`` piece by piece as it arrives, from the protocol's
        callback. True once the body is complete; False when ``sink`` returned False
        (reading from the backend is paused until ``pipe`` is called again). A
        connection error, or an exception ``sink`` raised, is raised here."""
        conn = self._conn
        if conn.body and not sink(conn.take()):
            return False
        if conn.complete:
            return True
        if conn.error is not None:
            raise conn.error
        conn.sink = sink
        conn._resume()
        try:
            await conn.wait()
        finally:
            conn.sink = None
        if conn.sink_error is not None:
            error, conn.sink_error = conn.sink_error, None
            conn.abort()  # the rest of this answer is unread
            raise error
        if conn.body and not sink(conn.take()):  # the last pieces came with the end
            return False
        if conn.complete:
            return True
        if conn.error is not None:
            raise conn.error
        return False

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def close(self) -> None:
        self._pool.release(self._conn)


class RawPool:
    """Keep-alive connections to one plain-http backend."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        keepalive: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        url = urlsplit(base_url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self._prefix = url.path.rstrip("/").encode("latin-1")
        self._host_header = url.netloc.encode("latin-1")
        # Headers every request to this backend carries, encoded once.
        self._extra = b"".join(
            f"{k}: {v}\r\n".encode("latin-1") for k, v in (headers or {}).items()
        )
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._idle: list[_Conn] = []

    async def connect(self) -> _Conn:
        """A pooled connection, or a new one (raises OSError or TimeoutError)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost and now - conn.idle_since < self._keepalive:
                conn.in_use = True
                return conn
            conn.abort()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(lambda: _Conn(loop), self.host, self.port)
        return conn

    async def request(
        self, conn: _Conn, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> RawResponse:
        """Send the request and wait for the answer's head; ConnectionError if the
        connection died first."""
        head = [
            b"%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n"
            % (method.encode(), self._prefix, path.encode(), self._host_header, len(body)),
            self._extra,
        ]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items()]
        head.append(b"\r\n")
        assert conn.transport is not None
        try:
            conn.transport.write(b"".join(head) + body)
            while not conn.got_headers:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            conn.abort()
            raise
        return RawResponse(self, conn)

    def release(self, conn: _Conn) -> None:
        if conn.complete and conn.keep_alive and not conn.lost and conn.error is None:
            conn.reset()
            conn.in_use = False
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.abort()  # an unread rest would poison the next answer

    def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()
