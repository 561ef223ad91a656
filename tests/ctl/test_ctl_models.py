"""``corral models ...`` against a real gateway in front of simulated Ollama nodes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from corral.sim.faults import Faults
from corral.sim.launch import NodeSpec, SimNode
from tests.ctl.support import run_cli
from tests.helpers import sim_fleet

LLAMA = "llama3.2:1b"
QWEN = "qwen2.5:0.5b"


async def _tags(node: SimNode) -> set[str]:
    async with httpx.AsyncClient(base_url=node.url) as c:
        return {m["name"] for m in (await c.get("/api/tags")).json()["models"]}


async def test_models_ls_shows_holders_as_a_table_and_as_json(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec(loaded=(LLAMA,)), NodeSpec()) as fleet:
        listed = await run_cli("models", "ls", "--url", fleet.url, home=tmp_path)
        as_json = await run_cli("models", "ls", "--json", "--url", fleet.url, home=tmp_path)
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert [c.strip() for c in header.split("┃")][:3] == ["MODEL", "HELD BY", "LOADED ON"]
    llama_row = next(r for r in rows if r.startswith(LLAMA))
    assert [c.strip() for c in llama_row.split("│")][1:3] == ["sim0, sim1", "sim0"]
    models = {m["model"]: m for m in json.loads(as_json.out)}
    assert models[LLAMA]["loaded_on"] == ["sim0"]
    assert {p["backend"] for p in models[QWEN]["backends"]} == {"sim0", "sim1"}


async def test_pull_shows_each_backend_and_fails_when_one_did(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec(), NodeSpec(faults=Faults(pull_error=1.0))) as fleet:
        url = ("--url", fleet.url)
        one = await run_cli("models", "pull", "phi3:mini", "-b", "sim0", *url, home=tmp_path)
        both = await run_cli("models", "pull", "gemma2:2b", *url, home=tmp_path)
        lines = await run_cli("models", "pull", "gemma2:2b", "--json", *url, home=tmp_path)
        sim0, sim1 = await _tags(fleet.node("sim0")), await _tags(fleet.node("sim1"))
    assert one.code == 0, one.err
    assert "pull phi3:mini: success" in one.out
    assert "sim0" in one.err  # its bar
    assert both.code == 1
    assert both.err.strip().splitlines()[-1] == "error: pull failed on 1 of 2 backends: sim1"
    assert "max retries exceeded: unexpected EOF" in both.out  # the table names the cause
    assert "Traceback" not in both.err
    decoded = [json.loads(line) for line in lines.out.splitlines()]
    assert decoded[0] == {"type": "start", "model": "gemma2:2b", "backends": ["sim0", "sim1"]}
    assert decoded[-1]["type"] == "summary" and decoded[-1]["status"] == "partial"
    assert lines.code == 1
    assert "phi3:mini" in sim0 and "gemma2:2b" in sim0 and "gemma2:2b" not in sim1


async def test_warm_unload_and_rm_act_on_the_nodes(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec(), NodeSpec()) as fleet:
        url = ("--url", fleet.url)
        warm = await run_cli(
            "models", "warm", QWEN, "-b", "sim1", "--keep-alive", "10m", "--json", *url,
            home=tmp_path,
        )  # fmt: skip
        unload = await run_cli("models", "unload", QWEN, *url, home=tmp_path)
        listed = await run_cli("models", "ls", "--json", *url, home=tmp_path)
        rm = await run_cli("models", "rm", QWEN, "-b", "sim0", *url, home=tmp_path)
        sim0, sim1 = await _tags(fleet.node("sim0")), await _tags(fleet.node("sim1"))
    assert warm.code == 0, warm.err
    answer = json.loads(warm.out)
    assert answer["status"] == "success"
    assert [(r["backend"], r["loaded"]) for r in answer["results"]] == [("sim1", True)]
    assert unload.code == 0, unload.err
    assert f"unload {QWEN}: success" in unload.out
    assert next(m for m in json.loads(listed.out) if m["model"] == QWEN)["loaded_on"] == []
    assert rm.code == 0, rm.err
    assert f"rm {QWEN}: success" in rm.out
    assert QWEN not in sim0 and QWEN in sim1


async def test_refusals_are_the_gateways_one_line(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        runs = [
            ("warm", "no-such-model"),
            ("unload", LLAMA, "-b", "gpu9"),
            ("warm", LLAMA, "--keep-alive", "0"),
            ("warm", LLAMA, "-b", "sim0", "--copies", "2"),
        ]
        ran = await asyncio.gather(
            *(run_cli("models", *a, "--url", fleet.url, home=tmp_path) for a in runs)
        )
        unknown_model, unknown_backend, zero, both = ran
    for ran in (unknown_model, unknown_backend, zero, both):
        assert ran.code == 1, ran
        assert ran.err.startswith("error: ") and ran.err.count("\n") == 1, ran.err
        assert ran.out == ""
    assert "404 from /admin/models/warm: model 'no-such-model' is not on any backend" in (
        unknown_model.err
    )
    assert "no backend named 'gpu9'" in unknown_backend.err
    assert "400 from /admin/models/warm" in zero.err and "keep_alive" in zero.err
    assert both.err == "error: give --backend or --copies, not both\n"
