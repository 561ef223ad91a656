"""`watch_client`: a client that hangs up mid-request is noticed, on uvicorn's own cycle
without a task of its own, and never after ``stop`` or once the answer is complete."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from corral.app.asgi import read_body, watch_client
from tests.app.test_direct_body import serve

SETTLE = 0.3  # how long a disconnect that should go unnoticed is given to show up


def post(port: int, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    sock.sendall(head + body)
    return sock


class Probe:
    """An app that reads the body, watches the client, then waits to be released."""

    def __init__(
        self, *, stop_first: bool = False, answer: bool = False, pause: bool = False
    ) -> None:
        self.stop_first = stop_first
        self.pause = pause
        self.answer = answer
        self.watching = asyncio.Event()
        self.release = asyncio.Event()
        self.gone = asyncio.Event()
        self.gone_calls = 0
        self.new_tasks: set[asyncio.Task[Any]] = set()

    def on_gone(self) -> None:
        self.gone_calls += 1
        self.gone.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(scope, receive, 1 << 20)
        if self.pause:
            flow = send.__self__.flow  # uvicorn's cycle
            flow.pause_reading()
            assert flow.read_paused
        before = asyncio.all_tasks()
        stop = watch_client(receive, send, self.on_gone)
        self.new_tasks = asyncio.all_tasks() - before
        if self.stop_first:
            stop()
        if self.answer:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})
        self.watching.set()
        try:
            await asyncio.wait_for(self.release.wait(), 10)
        finally:
            stop()


@asynccontextmanager
async def watched(probe: Probe) -> AsyncIterator[socket.socket]:
    """``probe`` served, one request sent; the client's socket once the app watches it.
    The app is released at the end."""
    async with serve(probe) as url:
        sock = post(int(url.rsplit(":", 1)[1]), b'{"a": 1}')
        try:
            await probe.watching.wait()
            yield sock
        finally:
            sock.close()
            probe.release.set()


async def test_a_client_hanging_up_is_noticed_without_a_task() -> None:
    probe = Probe()
    async with watched(probe) as sock:
        assert probe.new_tasks == set()  # uvicorn's own event does the watching
        sock.close()
        await asyncio.wait_for(probe.gone.wait(), 5)
        await asyncio.sleep(0.05)
        assert probe.gone_calls == 1


async def test_a_paused_read_is_resumed_to_see_the_hang_up() -> None:
    # uvicorn pauses reading when a body piece passes its 64 KiB high-water mark (or a
    # pipelined request waits); a lost connection is only seen while reading.
    probe = Probe(pause=True)
    async with watched(probe) as sock:
        sock.close()
        await asyncio.wait_for(probe.gone.wait(), 5)


async def test_nothing_is_called_after_stop() -> None:
    probe = Probe(stop_first=True)
    async with watched(probe) as sock:
        sock.close()
        await asyncio.sleep(SETTLE)
        assert probe.gone_calls == 0


async def test_a_close_after_the_whole_answer_is_not_a_departure() -> None:
    probe = Probe(answer=True)
    async with watched(probe) as sock:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.close()
        await asyncio.sleep(SETTLE)
        assert probe.gone_calls == 0


async def test_another_servers_send_is_watched_by_a_task() -> None:
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    gone = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:  # not uvicorn's
        raise AssertionError("nothing is sent")

    before = asyncio.all_tasks()
    stop = watch_client(messages.get, send, gone.set)
    assert len(asyncio.all_tasks() - before) == 1
    await messages.put({"type": "http.disconnect"})
    await asyncio.wait_for(gone.wait(), 5)
    stop()
