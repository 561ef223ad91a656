"""`CollectorPacer`: the cyclic collector on a clock. Young collections come every tick
whatever the allocation count says; middle and full ones on their own counts of ticks,
waiting for a quiet moment but not forever; cyclic garbage is still freed, and the
automatic collector comes back on at stop."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from corral.app.collector import CollectorPacer
from tests.helpers import until


class Node:
    def __init__(self) -> None:
        self.me: Any = self  # a reference cycle: only the collector frees it


@contextmanager
def collections() -> Iterator[list[int]]:
    """The generation of every collection that finishes within the block."""
    seen: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            seen.append(info["generation"])

    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)


async def test_ticks_run_young_middle_and_full_collections_in_turn() -> None:
    pacer = CollectorPacer(asyncio.get_running_loop(), period=0.01, middle_every=3, full_every=6)
    with collections() as seen:
        pacer.start()
        try:
            await until(lambda: pacer.ticks >= 6)
        finally:
            pacer.stop()
    assert seen[:6] == [0, 0, 1, 0, 0, 2]


def run_ticks(pacer: CollectorPacer, n: int) -> list[int]:
    """The generation each of ``n`` ticks collected (the ticks run here, not on a timer)."""
    with collections() as seen:
        for _ in range(n):
            pacer._tick()
    return seen


async def test_older_collections_wait_for_a_quiet_moment() -> None:
    open_now = 100
    pacer = CollectorPacer(
        asyncio.get_running_loop(), lambda: open_now, middle_every=3, full_every=30, quiet=10
    )
    try:
        assert run_ticks(pacer, 5) == [0] * 5  # a middle one is due from tick 3: busy
        open_now = 10
        assert run_ticks(pacer, 4) == [1, 0, 0, 1]  # quiet: at once, then every 3 ticks
    finally:
        pacer.stop()


async def test_under_load_that_never_lets_up_they_run_when_overdue() -> None:
    pacer = CollectorPacer(
        asyncio.get_running_loop(), lambda: 1000, middle_every=2, full_every=20, patience=3
    )
    try:
        seen = run_ticks(pacer, 24)
    finally:
        pacer.stop()
    # Middle ones are due 2 ticks after the last, overdue after 6. The full one is due
    # from tick 20: the next walk that runs (overdue at 24) is a full one.
    assert seen == ([0] * 5 + [1]) * 3 + [0] * 5 + [2]


async def test_the_automatic_collector_is_off_while_pacing_and_back_after() -> None:
    assert gc.isenabled()
    pacer = CollectorPacer(asyncio.get_running_loop(), period=10)
    pacer.start()
    try:
        assert not gc.isenabled()
        with collections() as seen:
            for _ in range(5 * gc.get_threshold()[0]):
                Node()  # enough new tracked objects to have set off young collections
            assert seen == []
    finally:
        pacer.stop()
    assert gc.isenabled()


async def test_cyclic_garbage_is_freed_by_a_tick() -> None:
    pacer = CollectorPacer(asyncio.get_running_loop(), period=0.01)
    pacer.start()
    try:
        node = Node()
        gone = weakref.ref(node)
        del node
        assert gone() is not None  # reference counting alone cannot free it
        for _ in range(200):
            if gone() is None:
                break
            await asyncio.sleep(0.005)
        assert gone() is None
    finally:
        pacer.stop()


def test_nonsense_settings_are_refused() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            CollectorPacer(loop, period=0)
        with pytest.raises(ValueError):
            CollectorPacer(loop, middle_every=10, full_every=5)
        with pytest.raises(ValueError):
            CollectorPacer(loop, patience=0)
    finally:
        loop.close()


async def test_a_server_asked_to_paces_the_collector_while_it_serves() -> None:
    import httpx
    import uvicorn

    from corral.app.listener import Server, bind

    during: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        during.append(gc.isenabled())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    (sock,) = bind("127.0.0.1", 0, 16)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, loop="none", http="httptools", lifespan="off", log_level="error")
    server = Server(config, pace_collector=True)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 204
    finally:
        server.should_exit = True
        await task
    assert during == [False]  # the pacer, not the allocation count, ran the collector
    assert gc.isenabled()
