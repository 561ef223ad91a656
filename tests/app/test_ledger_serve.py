"""The usage ledger across process deaths: ``corral serve`` under load, then SIGTERM or SIGKILL.

"Completed" means the client read a whole answer. The gateway may also have finished
a response its client never read (cut by the shutdown), so such rows are allowed:
the tests assert that every client-completed request has exactly one row, that no
request has two, and that every row belongs to a request that was sent.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.test_cli_serve import read_urls, spawn, stop, wait_ready
from tests.helpers import free_port

REQUESTS = 200
CLIENTS = 8


@pytest.fixture(scope="module")
def sims() -> Iterator[list[str]]:
    # Slow enough that a signal lands while requests are in flight.
    proc = spawn(
        "sim", "--nodes", "2", "--port", "0", "--speed", "20", "--num-parallel", "8",
        "--models", "llama3.2:1b",
    )  # fmt: skip
    urls = read_urls(proc, 2)
    for url in urls:
        wait_ready(url, proc, timeout=15)
    yield urls
    stop(proc)


def serve(sims: list[str], data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = spawn(
        "serve",
        "--port",
        str(port),
        env={"CORRAL_BACKENDS": ",".join(sims), "CORRAL_DATA_DIR": str(data_dir)},
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return proc, url


async def load(url: str, completed: set[str], started: asyncio.Event, after: int) -> None:
    """REQUESTS chats from CLIENTS tasks; ``started`` is set once ``after`` have completed."""
    ids = iter(range(REQUESTS))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for n in ids:
                rid = f"load-{n:04d}"
                body = {
                    "model": "llama3.2:1b",
                    "messages": [{"role": "user", "content": f"hello {n}"}],
                    "stream": False,
                    "options": {"num_predict": 8},
                }
                try:
                    reply = await http.post("/api/chat", json=body, headers={"X-Request-Id": rid})
                    answer = reply.json()
                except (httpx.HTTPError, ValueError):
                    continue  # cut by the shutdown: not completed
                if reply.status_code == 200 and answer.get("done") is True:
                    completed.add(rid)
                    if len(completed) >= after:
                        started.set()

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def load_then_signal(url: str, proc: subprocess.Popen[str], sig: signal.Signals) -> set[str]:
    completed: set[str] = set()
    started = asyncio.Event()
    running = asyncio.create_task(load(url, completed, started, after=REQUESTS // 4))
    await asyncio.wait_for(started.wait(), 60)
    proc.send_signal(sig)
    await asyncio.wait_for(running, 60)
    assert REQUESTS // 4 <= len(completed) < REQUESTS, "the signal did not land mid-load"
    return completed


def usage_rows(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(data_dir / "corral.db") as db:
        found = db.execute("SELECT request_id, count(*) FROM usage GROUP BY request_id").fetchall()
    db.close()
    return {rid: n for rid, n in found}


def check(rows: dict[str, int], completed: set[str]) -> None:
    assert completed <= rows.keys(), f"no row for {sorted(completed - rows.keys())}"
    assert all(n == 1 for n in rows.values())
    assert rows.keys() <= {f"load-{n:04d}" for n in range(REQUESTS)}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="corral-ledger-") as made:
        yield Path(made)


async def test_sigterm_mid_load_leaves_one_row_per_completed_request(
    sims: list[str], data_dir: Path
) -> None:
    proc, url = serve(sims, data_dir)
    try:
        completed = await load_then_signal(url, proc, signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: the exit says SIGTERM.
        assert await asyncio.to_thread(proc.wait, 30) in (0, -signal.SIGTERM)
    finally:
        output = stop(proc)
    assert "Application shutdown complete" in output, output
    assert "usage rows stay in the journal" not in output
    # Everything was committed at shutdown: the journal has nothing left to replay.
    rows = usage_rows(data_dir)
    check(rows, completed)


async def test_sigkill_mid_load_then_restart_replays_one_row_per_completed_request(
    sims: list[str], data_dir: Path
) -> None:
    proc, url = serve(sims, data_dir)
    try:
        completed = await load_then_signal(url, proc, signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        stop(proc)
    # Rows batched before the kill are there; the rest wait in the journal.
    before = usage_rows(data_dir)
    assert all(n == 1 for n in before.values())

    again, _ = serve(sims, data_dir)  # replays the journal before it serves
    try:
        rows = usage_rows(data_dir)
    finally:
        output = stop(again)
    check(rows, completed)
    assert len(rows) >= len(before)
    if len(rows) > len(before):
        assert "replayed" in output
