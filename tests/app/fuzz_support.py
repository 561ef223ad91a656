"""A real gateway in a thread of its own, for tests whose client side is synchronous.

Hypothesis (and schemathesis on top of it) drives a plain function once per example;
the gateway and its simulated nodes run in an event loop on another thread, so the
examples can call it over real sockets with a blocking client.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TypeVar

__all__ = ["in_thread"]

T = TypeVar("T")


@contextmanager
def in_thread(
    start: Callable[[], AbstractAsyncContextManager[T]],
    ready: Callable[[T], Awaitable[None]] | None = None,
    timeout: float = 60.0,
) -> Iterator[T]:
    """Enter ``start()`` in a new event loop on a new thread; yield what it gave.

    ``ready``, if given, runs in that loop before the value is handed out (to wait for
    backends to come up, to make keys). Leaving the block exits the context there and
    joins the thread; an error on either side is raised here.
    """
    handed: list[T] = []
    failure: list[BaseException] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with start() as value:
            if ready is not None:
                await ready(value)
            handed.append(value)
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # raised in the test's thread, not lost in this one
            failure.append(exc)
        finally:
            started.set()
            loop.close()

    thread = threading.Thread(target=run, name="gateway-under-test")
    thread.start()
    started.wait(timeout)
    try:
        if failure:
            raise failure[0]
        assert handed, f"the gateway did not start within {timeout:g} s"
        yield handed[0]
    finally:
        with contextlib.suppress(RuntimeError):  # the loop ended already (and said why)
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
    if failure:
        raise failure[0]
