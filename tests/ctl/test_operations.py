"""``corral queue``, ``corral config ...`` and ``corral workers ...`` against a real
gateway (workers: `corral sim` processes it starts itself)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import yaml

from corral.sim.launch import NodeSpec
from tests.app.workers_support import workers_gateway
from tests.ctl.support import Ran, run_cli
from tests.helpers import run_gateway, sim_fleet, until


def one_error(ran: Ran) -> str:
    assert ran.code == 1 and ran.out == "", ran
    assert ran.err.startswith("error: ") and ran.err.count("\n") == 1, ran.err
    return ran.err


async def test_a_paused_queue_holds_requests_until_resumed(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(timeout=60) as client:
        url = ("--url", fleet.url)
        paused = await run_cli("queue", "pause", *url, home=tmp_path)
        body = {"model": "llama3.2:1b", "prompt": "hi", "stream": False}
        request = asyncio.create_task(
            client.post(
                f"{fleet.url}/api/generate", json=body, headers={"X-Corral-Tenant": "team-a"}
            )
        )
        await until(lambda: fleet.gw.fleet.scheduler.waiting == 1, timeout=10)
        seen = await run_cli("queue", "--json", *url, home=tmp_path)
        table = await run_cli("queue", *url, home=tmp_path)
        resumed = await run_cli("queue", "resume", *url, home=tmp_path)
        answer = await asyncio.wait_for(request, 30)
    assert paused.code == 0 and "admission PAUSED" in paused.out
    view = json.loads(seen.out)
    assert (view["paused"], view["waiting"], view["by_model"]) == (True, 1, {"llama3.2:1b": 1})
    assert [t["tenant"] for t in view["tenants"]] == ["team-a"]
    assert table.out.startswith("1 waiting (at most 1024), 0 in flight, oldest waiting")
    assert "team-a" in table.out and "by model: llama3.2:1b 1" in table.out
    assert resumed.code == 0 and "PAUSED" not in resumed.out
    assert answer.status_code == 200


async def test_config_get_set_reload_and_save(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text(f"queue:\n  max_waiting: 50\nfleet:\n  token: {'t' * 32}\n")
    section = tmp_path / "queue.yaml"
    async with run_gateway([], config_file=config, data_dir=str(tmp_path / "d")) as gw:
        url = ("--url", gw.url)
        whole = await run_cli("config", "get", *url, home=tmp_path)
        got = await run_cli("config", "get", "queue", *url, home=tmp_path)
        changed = await run_cli(
            "config", "set", "queue", "max_waiting=123", "timeout_s=5", *url, home=tmp_path
        )
        after = await run_cli("config", "get", "queue", "--json", *url, home=tmp_path)
        section.write_text(got.out.replace("max_waiting: 50", "max_waiting: 60"))
        from_file = await run_cli("config", "set", "queue", "-f", str(section), *url,
                                  home=tmp_path)  # fmt: skip
        scalar = await run_cli("config", "set", "policy", "least_conn", *url, home=tmp_path)
        running = gw.gw.settings
        bad = await run_cli("config", "set", "queue", "max_waiting=-1", *url, home=tmp_path)
        unknown = await run_cli("config", "set", "nosuch", "a=1", *url, home=tmp_path)
        masked = await run_cli("config", "set", "fleet", "offline_after_s=60", *url,
                               home=tmp_path)  # fmt: skip
        config.write_text(config.read_text().replace("max_waiting: 50", "max_waiting: 70"))
        reloaded = await run_cli("config", "reload", "--json", *url, home=tmp_path)
        saved = await run_cli("config", "save", *url, home=tmp_path)
        token = gw.gw.settings.fleet.token
    assert whole.code == 0 and whole.out.startswith(f"# file: {config}\n")
    assert yaml.safe_load(whole.out)["queue"]["max_waiting"] == 50
    assert yaml.safe_load(got.out) == {"queue": yaml.safe_load(whole.out)["queue"]}
    assert changed.out.splitlines() == [
        "set queue: 2 settings changed",
        "  in effect now: queue.max_waiting, queue.timeout_s",
    ]
    assert json.loads(after.out)["max_waiting"] == 123 and json.loads(after.out)["timeout_s"] == 5
    assert from_file.code == 0, from_file.err
    assert scalar.code == 0, scalar.err
    assert (running.queue.max_waiting, running.queue.timeout_s) == (60, 30.0)  # file: whole
    assert running.policy == "least_conn"
    assert "400 from /admin/config/queue" in one_error(bad) and "max_waiting" in bad.err
    assert one_error(unknown).startswith("error: unknown config section 'nosuch'; known: ")
    assert "fleet.token is masked" in one_error(masked)
    assert token is not None and token.get_secret_value() == "t" * 32  # never replaced by ***
    assert "queue.max_waiting" in json.loads(reloaded.out)["changed"]
    assert saved.out.strip() == f"saved to {config} ({config.stat().st_size} bytes)"


async def test_config_refusals_from_the_gateway(tmp_path: Path) -> None:
    async with run_gateway([]) as gw:
        reload = await run_cli("config", "reload", "--url", gw.url, home=tmp_path)
        neither = await run_cli("config", "set", "queue", "--url", gw.url, home=tmp_path)
        workers = await run_cli("workers", "spawn", "--url", gw.url, home=tmp_path)
    assert "409 from /admin/config/reload" in one_error(reload)
    assert one_error(neither) == "error: give KEY=VALUE pairs, --file or --reset (one of them)\n"
    assert "workers are not configured" in one_error(workers)


async def test_workers_spawn_list_and_prune(tmp_path: Path) -> None:
    async with workers_gateway(max=2, autoscale=False) as wg:
        url = ("--url", wg.running.url)
        empty = await run_cli("workers", "ls", *url, home=tmp_path)
        spawned = await run_cli("workers", "spawn", "--json", *url, home=tmp_path)
        listed = await run_cli("workers", "ls", *url, home=tmp_path)
        too_many = await run_cli("workers", "spawn", "5", *url, home=tmp_path)
        pruned = await run_cli("workers", "prune", "--all", *url, home=tmp_path)
        after = await run_cli("workers", "ls", "--json", *url, home=tmp_path)
    assert empty.out.strip() == "0 workers (process, ollama), min 0, max 2, no autoscaling"
    (worker,) = json.loads(spawned.out)["workers"]
    assert worker["state"] == "ready" and worker["models"] == ["llama3.2:1b"]
    assert listed.out.startswith("1 worker (process, ollama)") and worker["id"] in listed.out
    assert "409 from /admin/workers/spawn" in one_error(too_many)
    assert pruned.out.startswith(f"prune: 1 worker ({worker['id']})")
    view = json.loads(after.out)
    assert view["workers"] == [] and [w["id"] for w in view["recent"]] == [worker["id"]]
