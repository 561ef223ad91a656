"""Starting and stopping engines: ports, readiness, failures, and no orphans."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from corral.engines.llamacpp import (
    EngineStartError,
    llamacpp_command,
    start_llamacpp,
    start_llamacpp_async,
)
from corral.engines.measure import measure


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gone(pid: int, within: float) -> bool:
    """True once ``pid`` no longer runs (a zombie counts as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_port_zero_binds_a_free_port_and_reports_it(tiny_model: Path) -> None:
    with start_llamacpp(tiny_model) as engine:
        assert engine.port > 0
        assert engine.url == f"http://127.0.0.1:{engine.port}"
        assert engine.load_seconds is not None
        assert 0 < engine.load_seconds < 5
        assert httpx.get(f"{engine.url}/health").status_code == 200


def test_a_given_port_is_used(tiny_model: Path) -> None:
    port = free_port()
    with start_llamacpp(tiny_model, port=port) as engine:
        assert engine.port == port


def test_without_an_alias_models_lists_the_file_stem(tiny_model: Path) -> None:
    with start_llamacpp(tiny_model) as engine:
        ids = [m["id"] for m in httpx.get(f"{engine.url}/v1/models").json()["data"]]
        assert ids == [tiny_model.stem] == [engine.model_id]


def test_stop_ends_the_child_cleanly_and_is_idempotent(tiny_model: Path) -> None:
    engine = start_llamacpp(tiny_model)
    assert engine.stop() == 0
    assert engine.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{engine.url}/health")


def test_a_broken_model_fails_fast_with_the_engines_output(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    started = time.monotonic()
    with pytest.raises(EngineStartError) as caught:
        start_llamacpp(broken)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "exited with code 1" in message
    assert "failed to load model" in message  # llama.cpp's own words, from the child's log


def test_a_missing_model_file_is_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        start_llamacpp(tmp_path / "nothing.gguf")


def test_the_log_keeps_the_childs_output(tiny_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    with start_llamacpp(tiny_model, log_path=log) as engine:
        assert f"serving {tiny_model} at {engine.url}" in engine.log_text()
    assert "model loaded" in log.read_text()  # kept after stop, since we chose the path


async def test_the_async_launcher(tiny_model: Path) -> None:
    async with (
        await start_llamacpp_async(tiny_model, alias="async-tiny") as engine,
        httpx.AsyncClient(base_url=engine.url) as http,
    ):
        models = (await http.get("/v1/models")).json()
        assert models["data"][0]["id"] == "async-tiny"
    assert engine.process.returncode == 0


def test_started_by_hand_it_prints_its_url_and_stops_on_sigint(tiny_model: Path) -> None:
    cmd = llamacpp_command(tiny_model, port=0, parallel=1, alias="by-hand")
    assert cmd[1:3] == ["-m", "corral.engines.llamacpp"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline().decode()
            found = re.search(r" at (http://127\.0\.0\.1:\d+) \(loaded in [\d.]+ s\)$", line)
            assert found, line
            url = found[1]
            assert httpx.get(f"{url}/health").status_code == 200
            child.send_signal(signal.SIGINT)
            assert child.wait(timeout=10) == 0
        finally:
            child.kill()


def test_the_engine_dies_with_the_process_that_started_it(tiny_model: Path, tmp_path: Path) -> None:
    parent_code = textwrap.dedent(
        f"""
        import time
        from corral.engines.llamacpp import start_llamacpp
        engine = start_llamacpp({str(tiny_model)!r})
        print(engine.pid, flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the dead parent's files stay
    with subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, env=env
    ) as parent:
        try:
            assert parent.stdout is not None
            engine_pid = int(parent.stdout.readline())
            parent.kill()  # no chance to clean up
            parent.wait()
            assert gone(engine_pid, within=5.0)
        finally:
            parent.kill()


def test_the_measuring_script_reports_every_figure() -> None:
    figures = measure(runs=1, parallel=1)
    assert set(figures) >= {"start_to_healthy_s", "rss_idle_mib", "one_request_tokens_per_s"}
    assert all(value > 0 for value in figures.values())
