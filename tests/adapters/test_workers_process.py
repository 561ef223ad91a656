"""The process provider with real processes; ports; readiness against simulated engines."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap

import psutil
import pytest

from corral.adapters.workers import (
    Launch,
    ProcessProvider,
    WorkerStartError,
    pick_port,
    wait_ready,
)
from corral.sim.launch import NodeSpec, VllmSpec, start_nodes, stop_nodes
from tests.helpers import FAST_SIM, until

PY = sys.executable


def gone(pid: int) -> bool:
    """Ended (a zombie nobody reaped yet counts: it runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def script(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


async def test_templates_fill_the_command_and_the_environment() -> None:
    code = "import os, sys; print(sys.argv[1:], os.environ['WHERE'], os.environ['GPU'])"
    provider = ProcessProvider(
        [*script(code), "--port", "{port}", "--id={id}", "{python}"],
        {"WHERE": "{host}:{port}", "GPU": "{gpu}"},
    )
    handle = await provider.start(Launch("worker-7", "127.0.0.1", 4567, gpu="1"))
    assert await provider.wait(handle) == 0
    assert not provider.alive(handle)
    assert provider.log_tail(handle) == [
        f"['--port', '4567', '--id=worker-7', '{PY}'] 127.0.0.1:4567 1"
    ]


async def test_the_log_tail_keeps_the_last_lines_of_stdout_and_stderr() -> None:
    code = """
        import sys
        for i in range(500):
            print(f"out {i}")
        print("to stderr", file=sys.stderr, flush=True)
        sys.stdout.write("no newline at the end")
    """
    provider = ProcessProvider(script(code))
    handle = await provider.start(Launch("w", "127.0.0.1", 1))
    await provider.wait(handle)
    tail = provider.log_tail(handle, 3)
    assert tail[-1] == "no newline at the end"
    assert "to stderr" in provider.log_tail(handle, 400)
    assert provider.log_tail(handle, 0) == []


async def test_stop_ends_the_whole_process_group() -> None:
    code = f"""
        import subprocess, time
        child = subprocess.Popen([{PY!r}, "-c", "import time; time.sleep(300)"])
        print(child.pid, flush=True)
        time.sleep(300)
    """
    provider = ProcessProvider(script(code))
    handle = await provider.start(Launch("w", "127.0.0.1", 1))
    await until(lambda: bool(provider.log_tail(handle)), timeout=10)
    grandchild = int(provider.log_tail(handle)[0])
    assert not gone(grandchild)
    code_ = await provider.stop(handle, timeout=5)
    assert code_ == -signal.SIGTERM
    await until(lambda: gone(grandchild), timeout=5)
    assert gone(handle.pid or 0)


async def test_a_worker_ignoring_sigterm_is_killed_after_the_timeout() -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring", flush=True)
        time.sleep(300)
    """
    provider = ProcessProvider(script(code))
    handle = await provider.start(Launch("w", "127.0.0.1", 1))
    await until(lambda: provider.log_tail(handle) == ["ignoring"], timeout=10)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await provider.stop(handle, timeout=0.3) == -signal.SIGKILL
    assert 0.3 <= loop.time() - began < 5
    assert await provider.stop(handle, timeout=0.3) == -signal.SIGKILL  # idempotent


async def test_a_missing_command_is_a_start_error() -> None:
    provider = ProcessProvider("no-such-engine-binary serve --port {port}")
    with pytest.raises(WorkerStartError, match="command not found: no-such-engine-binary"):
        await provider.start(Launch("w", "127.0.0.1", 1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_when_the_gateway_process_is_killed() -> None:
    launcher = f"""
        import asyncio, sys
        from corral.adapters.workers import Launch, ProcessProvider

        async def main():
            provider = ProcessProvider([{PY!r}, "-c", "import time; time.sleep(300)", "{{port}}"])
            handle = await provider.start(Launch("w", "127.0.0.1", 1))
            print(handle.pid, flush=True)
            await asyncio.sleep(300)

        asyncio.run(main())
    """
    proc = subprocess.Popen(script(launcher), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        assert not gone(worker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = asyncio.run(_wait_gone(worker, 5.0))
        assert deadline, f"worker {worker} outlived its killed parent"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _wait_gone(pid: int, timeout: float) -> bool:
    try:
        await until(lambda: gone(pid), timeout=timeout)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        return False
    return True


def test_pick_port_skips_ports_another_program_listens_on() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        bound = busy.getsockname()[1]
        with pytest.raises(WorkerStartError, match=f"no free port left in {bound}-{bound}"):
            pick_port("127.0.0.1", (bound, bound), set())
    assert pick_port("127.0.0.1", (bound, bound), set()) == bound  # free again


def test_pick_port_fails_clearly_when_the_range_is_used_up() -> None:
    with pytest.raises(WorkerStartError, match="no free port left in 2000-2001"):
        pick_port("127.0.0.1", (2000, 2001), {2000, 2001})


def test_pick_port_without_a_range_asks_the_system() -> None:
    port = pick_port("127.0.0.1", None, set())
    assert 0 < port < 65536


async def test_wait_ready_pulls_the_missing_models_onto_an_ollama_engine() -> None:
    (node,) = await start_nodes([NodeSpec(models=("qwen2.5:0.5b",), config=FAST_SIM)])
    try:
        held = await wait_ready(node.url, "ollama", ["llama3.2:1b", "qwen2.5:0.5b"], 20.0)
        assert {"llama3.2:1b", "qwen2.5:0.5b"} <= held
        assert {s.name for s in node.model.present()} >= {"llama3.2:1b", "qwen2.5:0.5b"}
    finally:
        await stop_nodes([node])


async def test_wait_ready_refuses_an_openai_engine_without_the_model() -> None:
    (node,) = await start_nodes([VllmSpec(model="Qwen/Qwen2.5-0.5B-Instruct")])
    try:
        with pytest.raises(WorkerStartError, match="cannot pull models") as excinfo:
            await wait_ready(node.url, "openai", ["llama3.2:1b"], 10.0)
        assert "qwen/qwen2.5-0.5b-instruct" in str(excinfo.value).lower()
        assert await wait_ready(node.url, "openai", ["Qwen/Qwen2.5-0.5B-Instruct"], 10.0)
    finally:
        await stop_nodes([node])


async def test_wait_ready_gives_up_after_its_timeout() -> None:
    port = pick_port("127.0.0.1", None, set())  # nothing listens there
    with pytest.raises(WorkerStartError, match=r"not ready within 0.3s \(waiting to answer\)"):
        await wait_ready(f"http://127.0.0.1:{port}", "ollama", [], 0.3)
