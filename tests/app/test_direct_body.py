"""Streamed chunks written straight onto uvicorn's transport (`direct_body`): framed as
uvicorn frames them, only when ``send`` is uvicorn's own, and never faster than the
client reads (the backend is paused instead). And whole answers `corked` into one
write."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from corral.app import asgi
from corral.app.asgi import DirectBody, direct_body
from corral.app.listener import Server, bind
from corral.sim.launch import NodeSpec
from corral.sim.model_types import NodeConfig
from tests.helpers import sim_fleet

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@asynccontextmanager
async def serve(app: App) -> AsyncIterator[str]:
    """``app`` behind uvicorn's httptools protocol, as `corral serve` runs it."""
    (sock,) = bind("127.0.0.1", 0, 128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="none", http="httptools", lifespan="off", access_log=False, log_level="error"
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_pieces_written_directly_arrive_as_one_chunked_body() -> None:
    found: list[DirectBody | None] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = direct_body(send)
        found.append(body)
        assert body is not None
        assert body.write(b"one\n") and body.write(b"two\n")
        await body.drain()
        await send({"type": "http.response.body", "body": b"three\n"})  # the last, via send

    async with serve(app) as url, httpx.AsyncClient() as client:
        resp = await client.get(url)
    assert resp.status_code == 200
    assert resp.headers["transfer-encoding"] == "chunked"
    assert resp.content == b"one\ntwo\nthree\n"
    assert found and found[0] is not None


async def test_a_wrapped_send_or_a_sized_body_is_left_to_send() -> None:
    found: list[DirectBody | None] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def wrapped(message: dict[str, Any]) -> None:  # as a middleware would
            await send(message)

        length = scope["path"] == "/sized"
        headers = [(b"content-length", b"2")] if length else []
        await wrapped({"type": "http.response.start", "status": 200, "headers": headers})
        found.append(direct_body(wrapped))
        found.append(direct_body(send))
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app) as url, httpx.AsyncClient() as client:
        assert (await client.get(url + "/chunked")).content == b"ok"
        assert (await client.get(url + "/sized")).content == b"ok"
    # Through a wrapper: never. Straight: only a chunked body (no Content-Length).
    assert found[0] is None and found[1] is not None
    assert found[2] is None and found[3] is None


def test_nothing_but_uvicorns_cycle_is_written_to_directly() -> None:
    class Impostor:
        chunked_encoding = True
        response_started = True
        response_complete = False

        async def send(self, message: dict[str, Any]) -> None: ...

    assert direct_body(Impostor().send) is None
    assert uvicorn.protocols.http.httptools_impl.__name__ == asgi._UVICORN_CYCLE


async def _read_slowly(url: str, body: bytes) -> bytes:
    """POST ``body`` from a socket with a tiny receive buffer, then read nothing for a
    while: the bytes pile up on the sender's side (an answer of ~5 MB: more than the
    kernel's send buffer takes, up to 4 MiB here)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    head = f"POST /api/generate HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    data = await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.5)
    while not data.endswith(b"\r\n0\r\n\r\n"):
        more = await reader.read(65536)
        assert more, "the stream ended early"
        data += more
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


def _unchunk(data: bytes) -> bytes:
    out = []
    while True:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2 :]


def _text(line: bytes) -> str:
    data = json.loads(line)
    return str(data.get("response", "")) + str(data.get("done", ""))


async def test_a_client_that_reads_slowly_pauses_the_backend_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drains = 0
    real_drain = DirectBody.drain

    async def counted(self: DirectBody) -> None:
        nonlocal drains
        drains += 1
        await real_drain(self)

    monkeypatch.setattr(DirectBody, "drain", counted)
    spec = NodeSpec(config=NodeConfig(zero_delay=True))
    body = {
        "model": "llama3.2:1b",
        "prompt": "write a long story",
        "options": {"num_predict": 50000},
    }
    async with sim_fleet(spec) as fleet, httpx.AsyncClient(timeout=30) as client:
        direct = (await client.post(fleet.nodes[0].url + "/api/generate", json=body)).content
        got = _unchunk(await _read_slowly(fleet.url, json.dumps(body).encode()))
    assert drains > 0  # Corral waited for the client instead of buffering without end
    lines, want = got.splitlines(), direct.splitlines()
    assert len(lines) == len(want) > 10_000
    # The same answer, token for token (timestamps and durations aside).
    assert [_text(x) for x in lines] == [_text(x) for x in want]


async def test_behind_cors_chunks_go_through_send_and_all_arrive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used: list[DirectBody] = []
    real_init = DirectBody.__init__

    def spy(self: DirectBody, cycle: Any) -> None:
        used.append(self)
        real_init(self, cycle)

    monkeypatch.setattr(DirectBody, "__init__", spy)
    body = {"model": "llama3.2:1b", "prompt": "a story", "options": {"num_predict": 300}}
    origin = {"Origin": "http://app.example"}
    async with (
        sim_fleet(NodeSpec(), cors={"origins": ["http://app.example"]}) as fleet,
        httpx.AsyncClient(timeout=30) as client,
    ):
        direct = (await client.post(fleet.nodes[0].url + "/api/generate", json=body)).content
        via = await client.post(fleet.url + "/api/generate", json=body, headers=origin)
    assert via.headers["access-control-allow-origin"] == "http://app.example"
    assert not used  # CORS wraps send: every chunk went through it
    assert [_text(x) for x in via.content.splitlines()] == [_text(x) for x in direct.splitlines()]


class _Recording:
    """uvicorn's transport, with every write it is given recorded."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _corked_app(writes: list[list[bytes]]) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        cycle = send.__self__
        recording = cycle.transport = _Recording(cycle.transport)
        writes.append(recording.writes)
        body = b'{"n":%d}' % len(writes)
        with asgi.corked(send):
            await send(asgi.response_start(200, len(body)))
            await send({"type": "http.response.body", "body": body})
        cycle.transport = recording.real

    return app


async def test_a_corked_answer_leaves_in_one_write_and_keeps_the_connection() -> None:
    writes: list[list[bytes]] = []
    async with serve(_corked_app(writes)) as url, httpx.AsyncClient() as client:
        first = await client.get(url)
        second = await client.get(url)  # the same keep-alive connection, still in order
    assert (first.status_code, first.json(), second.json()) == (200, {"n": 1}, {"n": 2})
    assert [len(w) for w in writes] == [1, 1]
    assert writes[0][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0][0].endswith(b'\r\n\r\n{"n":1}')


async def test_a_corked_answer_to_connection_close_is_written_then_closed() -> None:
    writes: list[list[bytes]] = []
    async with serve(_corked_app(writes)) as url, httpx.AsyncClient() as client:
        resp = await client.get(url, headers={"Connection": "close"})
    assert (resp.status_code, resp.json()) == (200, {"n": 1})
    assert resp.headers["connection"] == "close"
    assert len(writes[0]) == 1


async def test_corked_does_nothing_for_a_send_that_is_not_uvicorns() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message["type"])

    with asgi.corked(send):
        await send(asgi.response_start(200, 2))
        await send({"type": "http.response.body", "body": b"{}"})
    assert sent == ["http.response.start", "http.response.body"]


def spy_on_flushes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What each `corked` block hands to the transport, one item per write."""
    flushed: list[bytes] = []
    real_flush = asgi._Corked.flush

    def spy(self: Any) -> None:
        flushed.append(b"".join(self._parts))
        real_flush(self)

    monkeypatch.setattr(asgi._Corked, "flush", spy)
    return flushed


async def test_the_gateway_sends_a_whole_answer_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flushed = spy_on_flushes(monkeypatch)
    body = {"model": "llama3.2:1b", "prompt": "a story", "stream": False}
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(timeout=30) as client:
        whole = await client.post(fleet.url + "/api/generate", json=body)
        missing = await client.post(fleet.url + "/api/generate", json={**body, "model": "nope"})
    assert (whole.status_code, missing.status_code) == (200, 404)
    (answer, refusal) = flushed  # the error reply goes out whole too
    head, rest = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: %d" % len(rest) in head
    assert rest == whole.content and whole.json()["done"] is True
    assert refusal.startswith(b"HTTP/1.1 404") and refusal.endswith(missing.content)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"model": "llama3.2:1b", "prompt": "a story"}),  # passed through
        (  # translated: an OpenAI client, an Ollama node
            "/v1/chat/completions",
            {
                "model": "llama3.2:1b",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            },
        ),
    ],
)
async def test_the_gateway_sends_a_streams_head_with_its_first_chunk(
    monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, Any]
) -> None:
    flushed = spy_on_flushes(monkeypatch)
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(fleet.url + path, json=body)
    assert resp.status_code == 200
    head, first = flushed[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
    size, piece = first.split(b"\r\n", 1)
    assert piece == resp.content[: int(size, 16)] + b"\r\n"  # one whole chunk, the first
