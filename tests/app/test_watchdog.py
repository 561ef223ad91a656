"""The request watchdog on a real event loop: which timeout cancels a stalled task, and
when. Its timer is re-armed lazily, so these check that a silence limit made longer or
shorter still holds exactly."""

from __future__ import annotations

import asyncio

from corral.app.asgi import Watchdog


async def _stalls(watchdog_of: asyncio.Future[Watchdog]) -> None:
    watchdog = Watchdog(0.05, 10.0)
    watchdog_of.set_result(watchdog)
    try:
        await asyncio.sleep(10)
    finally:
        watchdog.stop()


async def _run(setup: object) -> tuple[str | None, float]:
    """Start a task guarded by a watchdog, let ``setup`` act on it, time the cancel."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[Watchdog] = loop.create_future()
    task = asyncio.create_task(_stalls(got))
    watchdog = await got
    assert callable(setup)
    await setup(watchdog)
    try:
        await task
    except asyncio.CancelledError:
        pass
    return watchdog.fired, loop.time() - watchdog.started


async def test_a_longer_silence_limit_outlasts_the_first_timer() -> None:
    async def longer(watchdog: Watchdog) -> None:
        await asyncio.sleep(0.02)
        watchdog.touch()
        watchdog.set_idle(0.25)  # the first timer (0.05 s) still fires, and must re-arm

    fired, after = await _run(longer)
    assert fired == "idle"
    assert 0.25 <= after < 1.0


async def test_a_shorter_silence_limit_fires_sooner_than_the_first() -> None:
    async def shorter(watchdog: Watchdog) -> None:
        watchdog.set_idle(0.01)

    fired, after = await _run(shorter)
    assert fired == "idle"
    assert 0.01 <= after < 0.045


async def test_touching_keeps_a_stream_alive_and_the_deadline_still_ends_it() -> None:
    loop = asyncio.get_running_loop()
    touches = 0
    got: asyncio.Future[Watchdog] = loop.create_future()

    async def chatty() -> None:
        nonlocal touches
        watchdog = Watchdog(0.05, 0.3)
        got.set_result(watchdog)
        try:
            while True:
                await asyncio.sleep(0.02)
                watchdog.touch()
                touches += 1
        finally:
            watchdog.stop()

    task = asyncio.create_task(chatty())
    watchdog = await got
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert watchdog.fired == "request"
    assert loop.time() - watchdog.started >= 0.3
    assert touches >= 10  # it was never idle long enough to be cut for silence
