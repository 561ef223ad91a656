"""How long one usage-ledger batch holds the event loop (SQLite), by batch size.

    .venv/bin/python bench/ledger_batch.py                 # 100, 300, 500 rows, 5 rounds
    .venv/bin/python bench/ledger_batch.py --sizes 500 --rounds 9
    taskset -c 0 .venv/bin/python bench/ledger_batch.py --steady 100 --seconds 20

The batching task runs on the gateway's event loop, between the streams' chunks: while
it prepares and sends a batch nothing else runs, so the longest stretch it holds the
loop lands directly on the streams' inter-chunk tail. A ticker task (``sleep(0)`` in a
loop) measures that stretch; the table also shows the batch's wall time and the main
thread's CPU time (the SQL itself runs in aiosqlite's thread). The ticker spins while
the batch waits for that thread, so the CPU time is taken from a second batch of the
same size, written without it. Median of the rounds, range in brackets.

``--steady R`` measures the ledger's whole cost instead, as a gateway pays it: R
records a second go to a running `UsageLog` (journal appends, its sync and batch task,
aiosqlite's thread) for ``--seconds``, on uvloop; the process's CPU time (all threads,
user and system) less that of the same pacing loop with no ledger, per record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

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


def process_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def paced(log: UsageLog | None, rate: int, seconds: float, first: int) -> float:
    """Process CPU seconds while ``rate`` records a second go to ``log`` (none: the pacing
    loop alone), in ticks of 10 ms as a gateway's requests end through a second."""
    loop = asyncio.get_running_loop()
    cpu0, start = process_cpu(), loop.time()
    sent = 0
    while (now := loop.time() - start) < seconds:
        due = int(now * rate)
        while sent < due:
            if log is not None:
                log.append(sample(first + sent), "ollama")
            sent += 1
        await asyncio.sleep(0.01)
    return process_cpu() - cpu0


async def steady(rate: int, seconds: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        store = await Store.open(f"sqlite+aiosqlite:///{where / 'corral.db'}")
        await store.upgrade()
        log = UsageLog(store, Journal(where / "usage.journal"))
        await log.start()
        await paced(log, rate, 1.0, 0)  # warm up
        costs = []
        for r in range(rounds):
            with_log = await paced(log, rate, seconds, (r + 1) * 10**7)
            alone = await paced(None, rate, seconds, 0)
            costs.append((with_log - alone) / (rate * seconds) * 1e6)
        await log.stop()
        await store.close()
        print(f"ledger at {rate} records/s: {cell(costs)} µs of process CPU per record")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100,300,500", help="rows per batch, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steady", type=int, default=0, help="records a second (whole cost)")
    ap.add_argument("--seconds", type=float, default=10.0, help="--steady: seconds per round")
    a = ap.parse_args()
    if a.steady:
        uvloop.run(steady(a.steady, a.seconds, min(a.rounds, 3)))
    else:
        asyncio.run(main([int(s) for s in a.sizes.split(",")], a.rounds))
