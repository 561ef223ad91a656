"""Corral's accept loop: a burst of connections is accepted in one wake-up, even on
uvloop (whose libuv accepts one connection per loop iteration)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import uvicorn
import uvloop

from corral.app.listener import Server, bind


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _start(server: Server, sock: socket.socket) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    return task


async def _serve_burst(n: int) -> tuple[int, int]:
    """Serve ``n`` clients that all connected before the loop ran, while the loop is kept
    busy (each iteration ~2 ms); returns (answers, busy iterations it took)."""
    loop = asyncio.get_running_loop()
    (sock,) = bind("127.0.0.1", 0, 2048)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _app, loop="none", http="httptools", lifespan="off", access_log=False, log_level="error"
    )
    server = Server(config)
    task = await _start(server, sock)
    iterations = 0
    busy_on = True

    def busy() -> None:
        nonlocal iterations
        iterations += 1
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        if busy_on:
            loop.call_soon(busy)

    clients = []
    for _ in range(n):  # connected in the kernel's accept queue before Corral looks
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.setblocking(False)
        clients.append(c)
    loop.call_soon(busy)
    start = iterations

    async def answer(c: socket.socket) -> bool:
        data = b""
        while b"ok" not in data:
            more = await loop.sock_recv(c, 1024)
            if not more:
                return False
            data += more
        return True

    try:
        async with asyncio.timeout(10):
            answered = sum(await asyncio.gather(*(answer(c) for c in clients)))
        took = iterations - start
    finally:
        for c in clients:
            c.close()
        busy_on = False
        server.should_exit = True
        await task
    return answered, took


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_a_burst_of_connections_is_accepted_at_once(use_uvloop: bool) -> None:
    run = uvloop.run if use_uvloop else asyncio.run
    answered, iterations = run(_serve_burst(100))
    assert answered == 100
    # One accept per iteration (libuv's own listener) would need 100+ iterations.
    assert iterations < 40


def test_bind_puts_every_address_on_one_port() -> None:
    socks = bind("localhost", 0, 16)
    try:
        assert socks
        assert len({s.getsockname()[1] for s in socks}) == 1
    finally:
        for s in socks:
            s.close()


def test_shutdown_closes_the_listener() -> None:
    async def go() -> None:
        (sock,) = bind("127.0.0.1", 0, 16)
        port = sock.getsockname()[1]
        config = uvicorn.Config(_app, loop="none", lifespan="off", log_level="error")
        server = Server(config)
        task = await _start(server, sock)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"ok" in await reader.read()
        writer.close()
        server.should_exit = True
        await task
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    asyncio.run(go())
