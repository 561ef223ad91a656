"""HttpTransport's lean path (every POST to a plain-http backend, streamed or whole) over
real sockets: a scripted backend that writes exactly the bytes a test gives it, one
request at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from corral.adapters.rawstream import RawResponse
from corral.adapters.upstream import HttpTransport, UpstreamConnectError, UpstreamRequest
from tests.helpers import free_port

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]


class Backend:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()


@asynccontextmanager
async def backend(script: Script) -> AsyncIterator[tuple[Backend, str]]:
    """Serves each request on each connection with ``script(reader, writer)``."""
    b = Backend()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                b.requests.append(head + await reader.readexactly(length))
                if await script(reader, writer) is False:  # type: ignore[func-returns-value]
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            b.closed.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield b, f"http://127.0.0.1:{port}"
    finally:
        server.close()


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def stream_request() -> UpstreamRequest:
    return UpstreamRequest("POST", "/api/chat", b'{"model":"m"}', {"X-Request-Id": "r1"})


async def test_a_chunked_stream_arrives_decoded_and_in_order() -> None:
    lines = [b'{"n":%d}\n' % i for i in range(5)]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        for line in lines:
            writer.write(b"%x\r\n%s\r\n" % (len(line), line))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    async with backend(script) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        resp = await transport.send(stream_request())
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        got = [chunk async for chunk in resp.chunks()]
        resp.close()
        await transport.close()
    assert b"".join(got) == b"".join(lines)
    assert len(got) > 1  # pieces as they came, not the whole body at the end
    assert b.requests[0].startswith(b"POST /api/chat HTTP/1.1\r\n")
    assert b"X-Request-Id: r1\r\n" in b.requests[0]
    assert b.requests[0].endswith(b'\r\n\r\n{"model":"m"}')


async def test_a_finished_stream_leaves_its_connection_for_the_next_request() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + chunked(b'{"done":true}\n'))

    async with backend(script) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        for _ in range(3):
            resp = await transport.send(stream_request())
            assert await resp.read() == b'{"done":true}\n'
            resp.close()
        await transport.close()
    assert b.connections == 1
    assert len(b.requests) == 3


async def test_whole_answers_take_the_lean_path_and_share_one_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"message":{"content":"hi"},"done":true}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    async with backend(script) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        for _ in range(3):
            resp = await transport.send(stream_request())
            assert isinstance(resp, RawResponse)
            assert (resp.status, resp.content_type) == (200, "application/json; charset=utf-8")
            assert await resp.read() == b'{"message":{"content":"hi"},"done":true}'
            resp.close()
        await transport.close()
    assert (b.connections, len(b.requests)) == (1, 3)


async def test_an_answer_ended_by_closing_the_connection_is_read_whole() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        return False

    async with backend(script) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        resp = await transport.send(stream_request())
        assert await resp.read() == b"part one, part two"
        resp.close()
        resp = await transport.send(stream_request())  # a new connection, not the closed one
        assert await resp.read() == b"part one, part two"
        resp.close()
        await transport.close()
    assert b.connections == 2


async def test_probes_and_other_gets_keep_the_aiohttp_client() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with backend(script) as (_, url):
        transport = HttpTransport(url, connect_timeout=2)
        resp = await transport.send(UpstreamRequest("GET", "/api/version"))
        assert not isinstance(resp, RawResponse)
        assert (resp.status, await resp.read()) == (200, b"ok")
        resp.close()
        await transport.close()


async def test_a_stream_closed_early_drops_its_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(HEAD + b"6\r\nfirst\n\r\n")
        assert await reader.read(1) == b""  # waits for the client to hang up
        return False

    async with backend(script) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        resp = await transport.send(stream_request())
        assert await anext(resp.chunks()) == b"first\n"
        resp.close()  # the client left: the backend must see its connection go
        await asyncio.wait_for(b.closed.wait(), 2)
        await transport.close()


async def test_a_backend_dying_mid_stream_raises_a_connection_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(HEAD + b"6\r\nfirst\n\r\n")
        await writer.drain()
        return False

    async with backend(script) as (_, url):
        transport = HttpTransport(url, connect_timeout=2)
        resp = await transport.send(stream_request())
        with pytest.raises(ConnectionError):
            async for _ in resp.chunks():
                pass
        resp.close()
        await transport.close()


async def test_a_pooled_connection_the_backend_closed_is_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(HEAD + chunked(b"x\n"))
        await writer.drain()
        return False  # keep-alive announced, but the backend closes it anyway

    async with backend(script) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        for _ in range(2):
            resp = await transport.send(stream_request())
            assert await resp.read() == b"x\n"
            resp.close()
            await asyncio.wait_for(b.closed.wait(), 2)
            b.closed.clear()
            await asyncio.sleep(0.01)
        await transport.close()
    assert b.connections == 2


async def test_a_backend_not_listening_is_a_connect_error() -> None:
    transport = HttpTransport(f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    with pytest.raises(UpstreamConnectError) as info:
        await transport.send(stream_request())
    assert info.value.backend_down
    await transport.close()


async def test_a_connection_closed_before_the_answer_is_a_stale_connection_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return False

    async with backend(script) as (_, url):
        transport = HttpTransport(url, connect_timeout=2)
        with pytest.raises(UpstreamConnectError) as info:
            await transport.send(stream_request())
        assert not info.value.backend_down
        await transport.close()


async def test_bytes_on_an_idle_pooled_connection_are_never_taken_for_an_answer() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + chunked(b"one\n"))
        await writer.drain()
        await asyncio.sleep(0.05)
        # A whole stray answer while the connection sits in the pool.
        writer.write(HEAD + chunked(b"stray\n"))

    async with backend(script) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        resp = await transport.send(stream_request())
        assert await resp.read() == b"one\n"
        resp.close()
        await asyncio.sleep(0.2)
        resp = await transport.send(stream_request())
        assert await resp.read() == b"one\n"
        resp.close()
        await transport.close()
    assert b.connections == 2


# -- pipe: pieces handed to a callback where they arrive --------------------------------


async def _raw(url: str, transport: HttpTransport | None = None) -> RawResponse:
    transport = transport or HttpTransport(url, connect_timeout=2)
    resp = await transport.send(stream_request())
    assert isinstance(resp, RawResponse)  # a plain-http stream takes the lean path
    return resp


async def test_pipe_hands_every_piece_to_the_sink_in_order_then_ends() -> None:
    lines = [b'{"n":%d}\n' % i for i in range(6)]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        for line in lines:
            writer.write(b"%x\r\n%s\r\n" % (len(line), line))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    async with backend(script) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        resp = await _raw(url, transport)
        got: list[bytes] = []
        assert await resp.pipe(lambda piece: got.append(piece) is None)
        resp.close()
        # The connection was read to its end: the next request reuses it.
        resp = await _raw(url, transport)
        assert await resp.read() == b"".join(lines)
        resp.close()
        await transport.close()
    assert b"".join(got) == b"".join(lines)
    assert len(got) > 1  # as they came, not at the end
    assert b.connections == 1


async def test_a_sink_saying_false_pauses_the_pipe_until_it_is_called_again() -> None:
    lines = [b'{"n":%d}\n' % i for i in range(4)]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        for line in lines:
            writer.write(b"%x\r\n%s\r\n" % (len(line), line))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")

    async with backend(script) as (_, url):
        resp = await _raw(url)
        got: list[bytes] = []
        stops = 0
        while True:
            # Stop after every piece, as a relay does when its client falls behind.
            if await resp.pipe(lambda piece: got.append(piece) or False):
                break
            stops += 1
            await asyncio.sleep(0.03)
        resp.close()
    assert b"".join(got) == b"".join(lines)
    assert stops >= 2


async def test_a_sink_that_raises_fails_the_pipe_and_drops_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(HEAD + b"6\r\nfirst\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
        assert await reader.read(1) == b""  # the client hung up
        return False

    def sink(piece: bytes) -> bool:
        if piece == b"second\n":
            raise ValueError("cannot translate this")
        return True

    async with backend(script) as (b, url):
        resp = await _raw(url)
        with pytest.raises(ValueError, match="cannot translate"):
            while not await resp.pipe(sink):
                pass
        resp.close()
        await asyncio.wait_for(b.closed.wait(), 2)


async def test_a_backend_dying_mid_pipe_raises_a_connection_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(HEAD + b"6\r\nfirst\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        return False

    async with backend(script) as (_, url):
        resp = await _raw(url)
        got: list[bytes] = []
        with pytest.raises(ConnectionError):
            await resp.pipe(lambda piece: got.append(piece) is None)
        resp.close()
    assert got == [b"first\n"]


async def test_a_closed_transport_opens_nothing_more() -> None:
    # A probe begun before its backend was removed calls send after close: it must not
    # make a session (or connection) that nothing would ever close.
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    async with backend(answer) as (b, url):
        transport = HttpTransport(url, connect_timeout=2)
        await transport.close()
        for request in (UpstreamRequest("GET", "/api/tags"), UpstreamRequest("POST", "/x", b"{}")):
            with pytest.raises(UpstreamConnectError, match="removed from the fleet"):
                await transport.send(request)
        assert transport._session is None
    assert b.connections == 0
