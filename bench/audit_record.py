"""Per-request cost of the request audit (``audit.content``) and of charging streams.

    .venv/bin/python bench/audit_record.py               # tables on stdout
    .venv/bin/python bench/audit_record.py -n 20000 --rounds 7

Times, with ``perf_counter_ns``, what a request's own task does for the audit, on a
real `Gateway` whose usage journal is open in a temp directory (no batching task, so
only the request's share is timed), for one typical chat request: a 1.2 KB Ollama
``/api/chat`` body (system prompt, three turns, options) streamed back as 300 NDJSON
chunks (about 1,300 characters of text).

- ``off``: ``Gateway.record`` with the usage journal on: what every request pays today.
- ``metadata``: the audit line (one decode of the body, parameters without text) and
  the record, in one journal line.
- ``full``: the 300 chunks sent through the `Transcript`, the line with the prompt
  and the answer's text, and the record; beside it the same 300 sends and record
  with no audit, so the difference is the audit's.

Then the stream meter per chunk: the relay's ``_Meter.add`` as it was (fair-share
charges only) and as it is, with and without an admission to charge every 16 tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from corral.adapters.store import Store
from corral.adapters.store.journal import Journal
from corral.adapters.store.usage_log import UsageLog
from corral.app.content_audit import ContentAudit
from corral.app.gateway import Gateway
from corral.app.pipeline import RequestContext
from corral.app.relay import _Meter
from corral.config import load_settings
from corral.core.limits import Limits, LocalCounters, Refusal
from corral.core.usage import UsageRecord

BODY = msgspec.json.encode(
    {
        "model": "llama3.2:1b",
        "messages": [
            {"role": "system", "content": "You are a careful assistant. " * 12},
            {"role": "user", "content": "How do I read a file line by line in Python? " * 4},
            {"role": "assistant", "content": "Open it and iterate over the file object. " * 6},
            {"role": "user", "content": "And if the file is huge and I need the last line?"},
        ],
        "options": {"temperature": 0.2, "num_predict": 300, "num_ctx": 8192},
        "keep_alive": "10m",
        "stream": True,
    }
)
WORDS = ["Seek", " to", " the", " end", " and", " read", " back", "wards", " in", " blocks."]


def chunks(n: int = 300) -> list[bytes]:
    out = []
    for i in range(n):
        line = {
            "model": "llama3.2:1b",
            "created_at": "2026-11-23T10:00:00.000000Z",
            "message": {"role": "assistant", "content": WORDS[i % len(WORDS)]},
            "done": False,
        }
        out.append(msgspec.json.encode(line) + b"\n")
    final = {
        "model": "llama3.2:1b",
        "created_at": "2026-11-23T10:00:01Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 300,
        "eval_count": n,
    }
    out.append(msgspec.json.encode(final) + b"\n")
    return out


def record(i: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"{i:016x}",
        endpoint="/api/chat",
        dialect="ollama",
        model="llama3.2:1b",
        backend="gpu1",
        status=200,
        started_at=time.time(),
        duration_s=1.5,
        ttfb_s=0.05,
        stream=True,
        prompt_tokens=300,
        completion_tokens=300,
        tenant="alice",
        route_reason="corral: loaded, least busy",
        user="alice",
        key_prefix="k3x9q2mf",
    )


async def _nothing(message: Any) -> None:
    return None


def context(gw: Gateway) -> RequestContext:
    ctx = RequestContext(gw, {}, _nothing, _nothing, "/api/chat", "ollama", "r", time.time())  # type: ignore[arg-type]
    ctx.body = BODY
    ctx.stream = True
    return ctx


def timed(n: int, count: int, one: Callable[[int], None]) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter_ns()
        for i in range(n):
            one(i)
        out.append((time.perf_counter_ns() - start) / n / 1000)
    return out


async def levels(gw: Gateway, n: int, count: int) -> dict[str, list[float]]:
    stream = chunks()
    start_msg = {"type": "http.response.start", "status": 200, "headers": []}
    records = [record(i) for i in range(n)]
    ctx = context(gw)
    results = {"off": timed(n, count, lambda i: gw.record(records[i]))}
    metadata = ContentAudit(gw.settings.audit.model_copy(update={"content": "metadata"}))
    results["metadata"] = timed(n, count, lambda i: gw.record(records[i], metadata.line(ctx)))
    full = ContentAudit(gw.settings.audit.model_copy(update={"content": "full"}))

    # The transcript's sends are coroutines that never suspend: drive them by hand so
    # the timing holds the audit's work, not an event loop's.
    def drive(coroutine: Any) -> None:
        try:
            coroutine.send(None)
        except StopIteration:
            pass

    def sends_only(i: int) -> None:
        # The same 300 sends without the audit: what streaming costs in this harness.
        send = context(gw).send
        drive(send(start_msg))
        for chunk in stream:
            drive(send({"type": "http.response.body", "body": chunk, "more_body": True}))
        gw.record(records[i])

    def one_full(i: int) -> None:
        ctx = context(gw)
        send = full.transcribe(ctx)
        drive(send(start_msg))
        for chunk in stream:
            drive(send({"type": "http.response.body", "body": chunk, "more_body": True}))
        gw.record(records[i], full.line(ctx))

    results["off, 300 sends"] = timed(max(1, n // 10), count, sends_only)
    results["full, 300 sends"] = timed(max(1, n // 10), count, one_full)
    return results


def meters(gw: Gateway, n: int, count: int) -> dict[str, list[float]]:
    chunk = chunks(1)[0]
    counters = LocalCounters()
    gw.auth.limits.counters = counters
    admission = counters.admit_now(
        Limits("k3x9q2mf", "alice", budget=10**12, tpm=10**9), 10, datetime.now(UTC)
    )
    out = {}
    for name, admitted in (
        ("no admission (auth off)", None),
        ("admission (budget, tpm)", admission),
    ):
        ctx = context(gw)
        ctx.admission = admitted
        add = _Meter(ctx, 1).add
        runs = []
        for _ in range(count):
            start = time.perf_counter_ns()
            for _ in range(n * 10):
                add(chunk)
            runs.append((time.perf_counter_ns() - start) / (n * 10) / 1000)
        out[name] = runs
    # The part charging adds at each batch point, alone: one Limiter.charge of 16 tokens.
    assert admission is not None and not isinstance(admission, Refusal)
    charge = gw.auth.limits.charge
    runs = []
    for _ in range(count):
        start = time.perf_counter_ns()
        for _ in range(n * 10):
            charge(admission, 16)
        runs.append((time.perf_counter_ns() - start) / (n * 10) / 1000)
    out["Limiter.charge, per batch"] = runs
    return out


async def main(n: int, count: int, directory: str | None) -> None:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        settings = load_settings(None, environ={}, overrides={"data_dir": tmp})
        gw = Gateway(settings)
        store = await Store.open(f"sqlite+aiosqlite:///{Path(tmp) / 'corral.db'}")
        journal = Journal(Path(tmp) / "usage.journal")
        journal.open()
        gw.ledger = UsageLog(store, journal)
        results = await levels(gw, n, count)
        meter = meters(gw, n, count)
        journal.close()
        await store.close()
    print(
        f"Request audit, one /api/chat request ({len(BODY)} B body, 300 streamed chunks), "
        f"{count} rounds (µs per request)"
    )
    print(f"{'audit.content':<16} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in results.items():
        print(f"{name:<16} {statistics.median(values):8.2f} {min(values):8.2f} {max(values):8.2f}")
    print(f"\nStream meter, _Meter.add per chunk, {count} rounds (µs per chunk or call)")
    for name, values in meter.items():
        print(f"{name:<26} {statistics.median(values):8.3f} {min(values):8.3f} {max(values):8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the temp journal goes")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.dir))
