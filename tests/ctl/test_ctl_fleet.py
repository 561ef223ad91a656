"""``corral status`` and ``corral backends ...`` against a real gateway: simulated
Ollama nodes from the settings, one registered at run time, one brought by a node
agent's heartbeats."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import httpx

from corral.sim.faults import Faults
from corral.sim.launch import NodeSpec, start_nodes, stop_nodes
from corral.sim.vllm_launch import VllmSpec
from tests.ctl.support import Ran, run_cli, start_cli
from tests.helpers import FAST_SIM, free_port, sim_fleet, until

TOKEN = "fleet-token-" + "c" * 20


def states(ran: Ran) -> dict[str, str]:
    assert ran.code == 0, ran.err
    return {b["name"]: b["state"] for b in json.loads(ran.out)["backends"]}


def one_error(ran: Ran) -> str:
    assert ran.code == 1 and ran.out == "", ran
    assert ran.err.startswith("error: ") and ran.err.count("\n") == 1, ran.err
    return ran.err


async def test_status_shows_each_backends_state_and_the_totals(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec(loaded=("llama3.2:1b",)), NodeSpec()) as fleet:
        url = ("--url", fleet.url)
        table = await run_cli("status", *url, home=tmp_path)
        drained = await run_cli("backends", "drain", "sim1", "--json", *url, home=tmp_path)
        disabled = await run_cli("backends", "disable", "sim0", *url, home=tmp_path)
        after = await run_cli("status", "--json", *url, home=tmp_path)
        enabled = await run_cli("backends", "enable", "sim0", *url, home=tmp_path)
        undrained = await run_cli("backends", "undrain", "sim1", *url, home=tmp_path)
        back = await run_cli("status", "--json", *url, home=tmp_path)
    assert table.code == 0, table.err
    rows = {line.split("│")[0].strip(): line for line in table.out.splitlines() if "│" in line}
    assert set(rows) == {"sim0", "sim1"}
    assert [c.strip() for c in rows["sim0"].split("│")][1:7] == [
        "ollama", "config", "healthy", "0/4", "0", "llama3.2:1b",
    ]  # fmt: skip
    assert (
        table.out.strip()
        .splitlines()[-1]
        .startswith("2 backends (2 healthy) · in flight 0 of 8 healthy slots · queue 0 waiting")
    )
    assert json.loads(drained.out)["draining"] is True
    assert disabled.out.strip() == "disable sim0: disabled (0/4 in flight)"
    assert states(after) == {"sim0": "disabled", "sim1": "drained"}
    totals = json.loads(after.out)["totals"]
    assert totals["states"] == {"disabled": 1, "drained": 1} and totals["slots"] == 0
    assert enabled.code == 0 and undrained.code == 0
    assert states(back) == {"sim0": "healthy", "sim1": "healthy"}


async def test_status_names_a_node_whose_agent_went_silent_offline(tmp_path: Path) -> None:
    fleet_settings = {"token": TOKEN, "offline_after_s": 0.5, "remove_after_s": 600}
    (engine,) = await start_nodes([NodeSpec(config=FAST_SIM, name="gpu7")])
    try:
        async with sim_fleet(NodeSpec(), fleet=fleet_settings) as fleet:
            beat = {
                "node_id": "gpu7",
                "instance": "i-1",
                "url": engine.url,
                "kind": "ollama",
                "engine": {"url": engine.url, "reachable": True},
                "interval_s": 0.1,
            }
            async with httpx.AsyncClient(base_url=fleet.url) as client:
                joined = await client.post(
                    "/agent/heartbeat", json=beat, headers={"Authorization": f"Bearer {TOKEN}"}
                )
            assert joined.status_code == 200, joined.text
            await until(lambda: fleet.gw.nodes.nodes["gpu7"].status == "offline")
            ran = await run_cli("status", "--json", "--url", fleet.url, home=tmp_path)
    finally:
        await stop_nodes([engine])
    assert states(ran) == {"sim0": "healthy", "gpu7": "offline"}
    origins = {b["name"]: b["origin"] for b in json.loads(ran.out)["backends"]}
    assert origins == {"sim0": "config", "gpu7": "agent"}


async def _until_seen(stream: asyncio.StreamReader, wanted: int, mark: bytes) -> bytes:
    seen = b""
    while seen.count(mark) < wanted:
        chunk = await asyncio.wait_for(stream.read(65536), 30)
        assert chunk, f"output ended after {seen!r}"
        seen += chunk
    return seen


async def test_status_watch_refreshes_until_ctrl_c(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        url = ("--url", fleet.url)
        piped = await start_cli("status", "-w", "0.2", *url, home=tmp_path)
        as_json = await start_cli("status", "--watch", "0.2", "--json", *url, home=tmp_path)
        # In a terminal the table is redrawn in place (Rich Live).
        live = await start_cli("status", "-w", "0.2", *url, home=tmp_path,
                               env={"TTY_COMPATIBLE": "1"})  # fmt: skip
        procs = (piped, as_json, live)
        outs = [p.stdout for p in procs]
        assert all(o is not None for o in outs)
        frames = await _until_seen(outs[0], 3, b"1 backend (1 healthy)")  # type: ignore[arg-type]
        looks = await _until_seen(outs[1], 3, b"\n")  # type: ignore[arg-type]
        drawn = await _until_seen(outs[2], 2, b"1 backend (1 healthy)")  # type: ignore[arg-type]
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        codes = [await asyncio.wait_for(p.wait(), 30) for p in procs]
        errs = [await p.stderr.read() for p in procs if p.stderr is not None]
    assert codes == [0, 0, 0], errs
    assert b"Traceback" not in b"".join(errs)
    assert frames.count(b"sim0") >= 3
    decoded = [json.loads(line) for line in looks.splitlines()[:3]]
    assert all(look["totals"]["states"] == {"healthy": 1} for look in decoded)
    assert b"\x1b[2K" in drawn and b"\x1b[1A" in drawn  # lines erased, cursor up: redrawn


async def test_a_registered_backend_comes_and_goes(tmp_path: Path) -> None:
    (extra,) = await start_nodes([NodeSpec(config=FAST_SIM, name="extra")])
    try:
        async with sim_fleet(NodeSpec()) as fleet:
            url = ("--url", fleet.url)
            add = await run_cli(
                "backends", "add", extra.url, "--name", "extra", "--max-concurrency", "2",
                "--weight", "2", "--tag", "spare", "--label", "zone=b", *url, home=tmp_path,
            )  # fmt: skip
            listed = await run_cli(
                "backends", "ls", "--origin", "registered", "--json", *url, home=tmp_path
            )
            table = await run_cli("backends", "ls", *url, home=tmp_path)
            again = await run_cli("backends", "add", extra.url, "--name", "extra", *url,
                                  home=tmp_path)  # fmt: skip
            nothing = await run_cli(
                "backends", "add", f"http://127.0.0.1:{free_port()}", *url, home=tmp_path
            )
            bad_label = await run_cli(
                "backends", "add", extra.url, "--label", "zone", *url, home=tmp_path
            )
            config_one = await run_cli("backends", "rm", "sim0", *url, home=tmp_path)
            unknown = await run_cli("backends", "drain", "gpu9", *url, home=tmp_path)
            removed = await run_cli("backends", "rm", "extra", *url, home=tmp_path)
            refreshed = await run_cli("backends", "refresh", "sim0", "--json", *url,
                                      home=tmp_path)  # fmt: skip
            left = set(fleet.gw.fleet.backends)
    finally:
        await stop_nodes([extra])
    assert add.code == 0, add.err
    assert add.out.strip() == "registered extra: healthy (0/2 in flight)"
    (one,) = json.loads(listed.out)
    picked: dict[str, Any] = {k: one[k] for k in ("name", "origin", "max_concurrency", "weight")}
    assert picked == {"name": "extra", "origin": "registered", "max_concurrency": 2, "weight": 2}
    assert (one["tags"], one["labels"]) == (["spare"], {"zone": "b"})
    assert {r.split("│")[0].strip() for r in table.out.splitlines()[2:]} == {"extra", "sim0"}
    assert "409 from /admin/backends" in one_error(again)
    assert "400 from /admin/backends" in one_error(nothing)
    assert one_error(bad_label) == "error: --label 'zone': expected name=value\n"
    assert "409 from /admin/backends/sim0" in one_error(config_one)
    assert "404 from /admin/backends/gpu9/drain" in one_error(unknown)
    assert removed.code == 0 and removed.out.startswith("deregistered extra:")
    assert json.loads(refreshed.out)["healthy"] is True
    assert left == {"sim0"}


async def test_status_shows_an_open_breaker(tmp_path: Path) -> None:
    failing = NodeSpec(faults=Faults(error_rate=1.0))
    breakers = {"consecutive_failures": 1, "open_s": 60}
    async with sim_fleet(failing, NodeSpec(), breakers=breakers) as fleet:
        body = {"model": "llama3.2:1b", "prompt": "hi", "stream": False}
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            board = fleet.gw.fleet.breakers
            assert board is not None
            now = asyncio.get_running_loop().time
            for _ in range(8):  # until a request is sent to sim0 and fails there
                await client.post("/api/generate", json=body)
                if board.snapshot(now()):
                    break
        table = await run_cli("status", "--url", fleet.url, home=tmp_path)
        as_json = await run_cli("status", "--json", "--url", fleet.url, home=tmp_path)
    assert table.code == 0, table.err
    row = next(line for line in table.out.splitlines() if line.startswith("sim0"))
    breaker = [c.strip() for c in row.split("│")][7]
    # "open llama3.2:1b 59 s"; "1m00s" when the CLI ran within half a second of opening
    assert re.fullmatch(r"open llama3\.2:1b (\d+ s|1m00s)", breaker), breaker
    (sim0,) = [b for b in json.loads(as_json.out)["backends"] if b["name"] == "sim0"]
    assert [b["state"] for b in sim0["breakers"]] == ["open"]


async def test_an_openai_kind_backend_is_added_by_url_prefix_or_kind(tmp_path: Path) -> None:
    vllm = await start_nodes([VllmSpec(name="v0", model="Qwen/Qwen2.5-7B-Instruct"),
                              VllmSpec(name="v1", model="Qwen/Qwen2.5-7B-Instruct")])  # fmt: skip
    try:
        async with sim_fleet(NodeSpec()) as fleet:
            url = ("--url", fleet.url)
            by_prefix = await run_cli(
                "backends", "add", f"openai+{vllm[0].url}", "--name", "v0", "--json", *url,
                home=tmp_path,
            )  # fmt: skip
            by_kind = await run_cli(
                "backends", "add", vllm[1].url, "--kind", "openai", "--name", "v1", "--json",
                *url, home=tmp_path,
            )  # fmt: skip
            contradiction = await run_cli(
                "backends", "add", f"openai+{vllm[1].url}", "--kind", "ollama", "--name", "v2",
                *url, home=tmp_path,
            )  # fmt: skip
            not_ollama = await run_cli(
                "backends", "add", vllm[1].url, "--name", "v3", *url, home=tmp_path
            )
    finally:
        await stop_nodes(vllm)
    for ran in (by_prefix, by_kind):
        assert ran.code == 0, ran.err
        added = json.loads(ran.out)
        assert (added["kind"], added["max_concurrency"], added["healthy"]) == ("openai", 32, True)
    assert "contradicts" in one_error(contradiction)
    assert "400 from /admin/backends" in one_error(not_ollama)
