"""`corral serve` with workers, as a real process: however it ends, no worker outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.app.workers_support import SIM, gone
from tests.helpers import free_port


@contextmanager
def serve_with_workers(tmp_path: Path, count: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    config = tmp_path / "corral.yaml"
    config.write_text(
        f"port: {port}\n"
        f"data_dir: {tmp_path / 'data'}\n"
        "workers:\n"
        f"  command: '{SIM}'\n"
        f"  min: {count}\n"
        "  interval_s: 0.1\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    with open(tmp_path / "serve.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "serve", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def ready_pids(url: str, proc: subprocess.Popen[bytes], count: int, log: Path) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            workers = httpx.get(url + "/admin/workers", timeout=2).json()["workers"]
        except httpx.TransportError:
            workers = []
        if sum(w["state"] == "ready" for w in workers) == count:
            return [w["pid"] for w in workers]
        time.sleep(0.1)
    raise AssertionError(f"workers not ready:\n{log.read_text()}")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.05)
    left = [p for p in pids if not gone(p)]
    for pid in left:  # leave nothing behind for the next test
        os.kill(pid, signal.SIGKILL)
    return left


def test_sigterm_stops_the_gateway_and_its_workers(tmp_path: Path) -> None:
    with serve_with_workers(tmp_path, 2) as (proc, url):
        pids = ready_pids(url, proc, 2, tmp_path / "serve.log")
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: the exit says SIGTERM.
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert wait_gone(pids, 1.0) == []
    log = (tmp_path / "serve.log").read_text()
    assert "worker worker-1 stopped" in log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_gateway_leaves_no_workers(tmp_path: Path) -> None:
    with serve_with_workers(tmp_path, 2) as (proc, url):
        pids = ready_pids(url, proc, 2, tmp_path / "serve.log")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_gone(pids, 10.0) == []
