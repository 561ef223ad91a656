"""``corral sim``: the flags, the specs they build, and a real process on a free port."""

from __future__ import annotations

import math
import subprocess
import sys

import httpx
import typer
import typer.main

from corral.sim.cli import build_specs, sim
from corral.sim.faults import Faults

FLAGS = {
    "--port",
    "--host",
    "--models",
    "--nodes",
    "--catalogue",
    "--zero-delay",
    "--speed",
    "--seed",
    "--num-parallel",
    "--max-loaded-models",
    "--vram-gb",
    "--max-queue",
    "--keep-alive",
    "--loaded",
    "--error-rate",
    "--error-mid-stream",
    "--hang",
    "--slow",
    "--drop-mid-stream",
    "--malformed-json",
    "--busy",
}


def test_sim_command_exposes_the_documented_flags() -> None:
    app = typer.Typer()
    app.command("sim")(sim)
    app.command("other")(lambda: None)
    command = typer.main.get_command(app).commands["sim"]  # type: ignore[attr-defined]
    opts = {o for p in command.params for o in p.opts if o.startswith("--")}
    assert opts == FLAGS
    assert all(p.help for p in command.params)


def test_nodes_take_consecutive_ports_and_their_own_seeds() -> None:
    specs = build_specs(
        port=12000,
        nodes=3,
        models="a:7b, b",
        loaded="a:7b",
        seed=5,
        num_parallel=4,
        vram_gb=8,
        keep_alive="-1",
        zero_delay=True,
    )
    assert [s.port for s in specs] == [12000, 12001, 12002]
    assert [s.config.seed for s in specs] == [5, 6, 7]
    first = specs[0]
    assert first.models == ("a:7b", "b") and first.loaded == ("a:7b",)
    assert first.config.num_parallel == 4 and first.config.vram_bytes == 8 * 1024**3
    assert math.isinf(first.config.keep_alive) and first.config.token_chunk == 0
    assert build_specs(keep_alive="10m")[0].config.keep_alive == 600
    assert build_specs(keep_alive="90")[0].config.keep_alive == 90
    assert build_specs(port=0, nodes=2)[1].port == 0
    assert build_specs(faults=Faults(busy=True))[0].faults.busy


def test_python_m_corral_sim_serves_and_prints_one_line_per_node() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.sim",
            "--port",
            "0",
            "--nodes",
            "2",
            "--zero-delay",
            "--models",
            "llama3.2:1b",
            "--loaded",
            "llama3.2:1b",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        urls = [line.split()[3] for line in lines]
        assert all(line.startswith("corral sim: node") for line in lines)
        assert "loaded=llama3.2:1b" in lines[0]
        for url in urls:
            r = httpx.post(
                f"{url}/api/generate",
                json={"model": "llama3.2:1b", "prompt": "x", "stream": False},
                timeout=10,
            )
            assert r.status_code == 200 and r.json()["done"] is True
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()
