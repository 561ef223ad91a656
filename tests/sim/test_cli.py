"""``corral sim``: the flags, the specs they build, and a real process on a free port."""

from __future__ import annotations

import math
import subprocess
import sys

import httpx
import pytest
import typer
import typer.main

from corral.sim.cli import build_specs, build_vllm_specs, sim
from corral.sim.faults import Faults

FLAGS = {
    "--dialect",
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
    "--pull-error",
    "--no-usage",
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--max-model-len",
    "--kv-cache-tokens",
    "--prefix-caching",
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


def test_vllm_specs_serve_one_model_each_on_consecutive_ports() -> None:
    same = build_vllm_specs(port=11600, nodes=2, models="Qwen/Qwen2.5-7B-Instruct", seed=3)
    assert [(s.port, s.model, s.config.seed) for s in same] == [
        (11600, "Qwen/Qwen2.5-7B-Instruct", 3),
        (11601, "Qwen/Qwen2.5-7B-Instruct", 4),
    ]
    each = build_vllm_specs(
        nodes=2,
        models="a-7b,b-1b",
        max_num_seqs=8,
        max_num_batched_tokens=1024,
        max_model_len=4096,
        kv_cache_tokens=8192,
        prefix_caching=False,
        zero_delay=True,
        faults=Faults(busy=True),
    )
    assert [s.model for s in each] == ["a-7b", "b-1b"]
    config = each[0].config
    assert (config.max_num_seqs, config.max_num_batched_tokens) == (8, 1024)
    assert (config.max_model_len, config.kv_cache_tokens) == (4096, 8192)
    assert not config.enable_prefix_caching and config.token_chunk == 0
    assert each[1].faults.busy


def test_vllm_specs_refuse_a_model_count_or_cache_that_cannot_work() -> None:
    with pytest.raises(typer.BadParameter, match="one per node"):
        build_vllm_specs(nodes=3, models="a,b")
    with pytest.raises(typer.BadParameter, match="--kv-cache-tokens"):
        build_vllm_specs(models="Qwen/Qwen2.5-7B-Instruct", kv_cache_tokens=1000)


def test_python_m_corral_sim_dialect_vllm_serves_openai() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.sim",
            "--dialect",
            "vllm",
            "--port",
            "0",
            "--nodes",
            "2",
            "--zero-delay",
            "--models",
            "Qwen/Qwen2.5-0.5B-Instruct,Qwen/Qwen2.5-1.5B-Instruct",
            "--max-num-seqs",
            "4",
            "--max-model-len",
            "2048",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert all("dialect=vllm" in line and "max_model_len=2048" in line for line in lines)
        for line, size in zip(lines, ("0.5B", "1.5B"), strict=True):
            url = line.split()[3]
            models = httpx.get(f"{url}/v1/models", timeout=10).json()["data"]
            assert [m["id"] for m in models] == [f"Qwen/Qwen2.5-{size}-Instruct"]
            r = httpx.post(
                f"{url}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
                timeout=10,
            )
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()
