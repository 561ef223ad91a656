"""Hot-path cost of ``Gateway.record`` with the usage journal on and off.

    .venv/bin/python bench/ledger_record.py               # table on stdout
    .venv/bin/python bench/ledger_record.py -n 100000 --rounds 7

Each round times ``-n`` calls of ``Gateway.record`` with ``perf_counter_ns`` and
reports microseconds per call; the table shows the median round and the range.
``journal`` opens the journal in a temp directory (on the same file system as
``--dir``, default the system temp directory) without starting the batching task,
so only the request's share is timed: one msgspec encode and one ``write`` call.
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
from corral.app.gateway import Gateway
from corral.config import load_settings
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
        duration_s=0.4,
        ttfb_s=0.05,
        stream=True,
        prompt_tokens=120,
        completion_tokens=300,
        tenant="faculty",
        route_reason="corral: loaded, least busy",
        user="alice",
        key_prefix="k3x9q2mf",
    )


def rounds(gw: Gateway, n: int, count: int) -> list[float]:
    records = [sample(i) for i in range(n)]
    out = []
    for _ in range(count):
        start = time.perf_counter_ns()
        for record in records:
            gw.record(record)
        out.append((time.perf_counter_ns() - start) / n / 1000)
    return out


async def main(n: int, count: int, directory: str | None) -> None:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        settings = load_settings(None, environ={}, overrides={"data_dir": tmp})
        gw = Gateway(settings)
        results = {"journal off": rounds(gw, n, count)}
        store = await Store.open(f"sqlite+aiosqlite:///{Path(tmp) / 'corral.db'}")
        journal = Journal(Path(tmp) / "usage.journal")
        journal.open()
        gw.ledger = UsageLog(store, journal)
        results["journal on"] = rounds(gw, n, count)
        journal.close()
        await store.close()
    print(f"Gateway.record, {n} calls per round, {count} rounds (µs per call)")
    print(f"{'':<12} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in results.items():
        print(f"{name:<12} {statistics.median(values):8.2f} {min(values):8.2f} {max(values):8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the temp journal goes")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.dir))
