"""How long one usage-ledger batch holds the event loop (SQLite), by batch size.

    .venv/bin/python bench/ledger_batch.py                 # 100, 300, 500 rows, 5 rounds
    .venv/bin/python bench/ledger_batch.py --sizes 500 --rounds 9

The batching task runs on the gateway's event loop, between the streams' chunks: while
it prepares and sends a batch nothing else runs, so the longest stretch it holds the
loop lands directly on the streams' inter-chunk tail. A ticker task (``sleep(0)`` in a
loop) measures that stretch; the table also shows the batch's wall time and the main
thread's CPU time (the SQL itself runs in aiosqlite's thread). The ticker spins while
the batch waits for that thread, so the CPU time is taken from a second batch of the
same size, written without it. Median of the rounds, range in brackets.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from corral.adapters.store import Store
from corral.adapters.store.journal import Journal
from corral.adapters.store.usage_log import UsageLog
from corral.core.usage import UsageRecord


def sample(n: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"{n:016x}",
        endpoint="/api/chat",
        dialect="ollama",
        model="llama3.2:1b",
        backend="gpu1",
        status=200,
        started_at=time.time(),
        duration_s=1.1,
        ttfb_s=0.02,
        stream=True,
        prompt_tokens=12,
        completion_tokens=50,
        usage_source="reported",
        attempts=1,
        tenant="127.0.0.1",
        route_reason="corral: loaded, 3 in flight",
    )


async def one_batch(log: UsageLog, size: int, first: int) -> tuple[float, float, float]:
    """(longest loop stall, wall, main-thread CPU), all in ms, for batches of ``size``:
    rows ``first`` on with the ticker, then as many again without it for the CPU."""
    stall, wall = await timed_batch(log, size, first)
    for i in range(size):
        log.append(sample(first + size + i), "ollama")
    cpu0 = time.thread_time()
    await log.commit_batch()
    return stall, wall, (time.thread_time() - cpu0) * 1e3


async def timed_batch(log: UsageLog, size: int, first: int) -> tuple[float, float]:
    for i in range(size):
        log.append(sample(first + i), "ollama")
    loop = asyncio.get_running_loop()
    stalls: list[float] = []
    done = False

    async def ticker() -> None:
        last = loop.time()
        while not done:
            await asyncio.sleep(0)
            now = loop.time()
            stalls.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    wall0 = time.perf_counter()
    await log.commit_batch()
    wall1 = time.perf_counter()
    done = True
    await tick
    return max(stalls) * 1e3, (wall1 - wall0) * 1e3


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


async def main(sizes: list[int], rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        store = await Store.open(f"sqlite+aiosqlite:///{where / 'corral.db'}")
        await store.upgrade()
        log = UsageLog(store, Journal(where / "usage.journal"), batch_max=max(sizes))
        await log.start()
        print("| rows | longest loop stall ms | batch wall ms | main-thread CPU ms |")
        print("|---:|---:|---:|---:|")
        first = 0
        for size in sizes:
            got = []
            for _ in range(rounds):
                got.append(await one_batch(log, size, first))
                first += 2 * size
            stall, wall, cpu = ([g[i] for g in got] for i in range(3))
            print(f"| {size} | {cell(stall)} | {cell(wall)} | {cell(cpu)} |")
        await log.stop()
        await store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100,300,500", help="rows per batch, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    asyncio.run(main([int(s) for s in a.sizes.split(",")], a.rounds))
