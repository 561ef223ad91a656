"""/admin/config on a live gateway: the running settings, their schema, a section changed
at run time (live or at restart), reload from the file, save to it."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import httpx
import pytest
import yaml

from corral.adapters.store.audit import search_audit
from corral.app.admin.config_api import redact
from corral.app.gateway import Gateway
from corral.config import load_settings
from corral.sim.launch import NodeSpec, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig
from tests.helpers import run_gateway, sim_fleet, until

MODEL = "llama3.2:1b"


async def actions(gw: Gateway) -> list[tuple[str, str]]:
    assert gw.store is not None
    events = await search_audit(gw.store, text="config.", limit=100)
    return [(e.action, e.target) for e in reversed(events.items)]


def test_secrets_are_masked_in_what_is_shown() -> None:
    shown = redact({"database_url": "postgresql+asyncpg://corral:s3cret@db:5432/corral", "port": 1})
    assert "s3cret" not in shown["database_url"]
    assert shown["database_url"].startswith("postgresql+asyncpg://corral:")
    assert redact({"database_url": None}) == {"database_url": None}


async def test_the_running_config_and_its_schema_are_shown() -> None:
    async with (
        run_gateway([], queue={"max_waiting": 7}) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        shown = (await client.get("/admin/config")).json()
        schema = (await client.get("/admin/config/schema")).json()
    assert shown["config"]["queue"]["max_waiting"] == 7
    assert shown["config"]["port"] == 8088 and shown["config"]["log_buffer"] == 1000
    assert shown["file"] is None and shown["restart_needed"] == []
    assert "queue" in shown["live"] and "timeouts.connect_s" in shown["restart_only"]
    assert {"backends", "queue", "breakers", "log_buffer"} <= set(schema["properties"])
    assert "BackendConfig" in schema["$defs"]


async def test_a_live_section_applies_at_once() -> None:
    steady = NodeConfig(speed=1.0, jitter=0.0)
    async with sim_fleet(NodeSpec(config=steady, loaded=(MODEL,)), max_concurrency=1) as fleet:
        gw = fleet.gw
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            changed = await client.put(
                "/admin/config/queue", json={"max_waiting": 0, "timeout_s": 5}
            )
            long = {"model": MODEL, "prompt": "x", "stream": False, "options": {"num_predict": 300}}
            running = asyncio.create_task(client.post("/api/generate", json=long))
            await until(lambda: gw.fleet.scheduler.in_flight == 1)
            refused = await client.post("/api/generate", json={**long, "options": {}})
            await running
            retry = await client.put("/admin/config/retry", json={"attempts": 1})
        assert await actions(gw) == [("config.update", "queue"), ("config.update", "retry")]
    body = changed.json()
    assert changed.status_code == 200
    assert body["applied_live"] == ["queue.max_waiting", "queue.timeout_s"]
    assert body["needs_restart"] == []
    assert body["value"]["max_waiting"] == 0 and body["value"]["aging_s"] == 30.0
    assert refused.status_code == 503 and "queue is full" in refused.json()["error"]
    assert gw.settings.queue.max_waiting == 0
    assert gw.retry_policy.max_attempts == 1 and retry.json()["applied_live"] == ["retry.attempts"]


async def test_a_setting_built_at_start_waits_for_a_restart_and_says_so() -> None:
    async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        moved = (await client.put("/admin/config/port", json=9999)).json()
        pending = (await client.get("/admin/config")).json()
        back = (await client.put("/admin/config/port", json=8088)).json()
        settled = (await client.get("/admin/config")).json()
        timeouts = (
            await client.put("/admin/config/timeouts", json={"connect_s": 2, "request_s": 60})
        ).json()
    assert (moved["applied_live"], moved["needs_restart"]) == ([], ["port"])
    assert pending["restart_needed"] == ["port"] and pending["config"]["port"] == 9999
    assert back["changed"] == ["port"] and settled["restart_needed"] == []
    assert timeouts["applied_live"] == ["timeouts.request_s"]
    assert timeouts["needs_restart"] == ["timeouts.connect_s"]


@pytest.mark.parametrize(
    ("section", "value", "param"),
    [
        ("nope", {}, "section"),
        ("queue", {"max_waiting": -1}, "queue.max_waiting"),
        ("queue", {"max_wating": 1}, "queue.max_wating"),
        ("retry", {"backoff_s": 2, "backoff_max_s": 1}, "retry"),
        ("port", "many", "port"),
        ("host", "not a host!!", "host"),
        ("host", "http://0.0.0.0:8088", "host"),
        ("policy", "fastest", "policy"),
        ("backends", [{"url": "ftp://x"}], "backends[0].url"),
        ("backends", ["http://a:1", "http://a:1"], "backends"),
    ],
)
async def test_a_bad_value_is_a_400_naming_the_field_and_nothing_changes(
    section: str, value: object, param: str
) -> None:
    async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        before = gw.gw.settings
        resp = await client.put(f"/admin/config/{section}", json=value)
        assert gw.gw.settings is before
        assert await actions(gw.gw) == []
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


async def test_the_config_backends_are_added_removed_and_updated_live() -> None:
    extra = await start_nodes([NodeSpec(name="extra", models=("gemma3:4b",))])
    try:
        async with sim_fleet(NodeSpec(), NodeSpec()) as fleet:
            gw = fleet.gw
            sim0 = fleet.node("sim0").url
            async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
                registered = await client.post(
                    "/admin/backends", json={"name": "reg", "url": extra[0].url}
                )
                assert registered.status_code == 201
                changed = await client.put(
                    "/admin/config/backends",
                    json=[
                        {"name": "sim0", "url": sim0, "max_concurrency": 2},
                        {"name": "new", "url": extra[0].url, "tags": ["late"]},
                    ],
                )
                clash = await client.put(
                    "/admin/config/backends", json=[{"name": "reg", "url": sim0}]
                )
            backends = gw.fleet.backends
            body = changed.json()
            assert changed.status_code == 200, changed.text
            assert (body["backends_added"], body["backends_removed"]) == (["new"], ["sim1"])
            assert body["backends_updated"] == ["sim0"]
            assert set(backends) == {"sim0", "new", "reg"}
            assert backends["sim0"].max_concurrency == 2
            assert backends["new"].healthy and backends["new"].tags == ("late",)
            assert backends["new"].origin == "config"
            assert clash.status_code == 409 and clash.json()["error"]["param"] == "backends[0].name"
            assert [b.name for b in gw.settings.backends] == ["sim0", "new"]
    finally:
        await stop_nodes(extra)


async def test_log_level_applies_live() -> None:
    root = logging.getLogger()
    level = root.level
    try:
        async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            resp = await client.put("/admin/config/log_level", json="DEBUG")
            assert resp.json()["applied_live"] == ["log_level"]
            assert root.level == logging.DEBUG
            assert gw.gw.settings.log_level == "debug"
    finally:
        root.setLevel(level)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def test_reload_reads_the_file_again_and_a_bad_file_changes_nothing(tmp_path: Path) -> None:
    nodes = await start_nodes([NodeSpec(name="n1"), NodeSpec(name="n2")])
    config = tmp_path / "corral.yaml"
    _write(config, f"backends: [n1={nodes[0].url}]\nqueue:\n  max_waiting: 10\n")
    try:
        async with run_gateway([], config_file=config, data_dir=str(tmp_path / "d")) as gw:
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
                assert gw.gw.settings.queue.max_waiting == 10
                _write(
                    config,
                    f"backends: [n1={nodes[0].url}, n2={nodes[1].url}]\n"
                    "queue:\n  max_waiting: 20\nhost: 127.0.0.2\n",
                )
                reloaded = (await client.post("/admin/config/reload")).json()
                settings = gw.gw.settings
                _write(config, "queue:\n  max_waiting: -5\n")
                bad = await client.post("/admin/config/reload")
                kept = gw.gw.settings
            assert await actions(gw.gw) == [("config.reload", str(config))]
    finally:
        await stop_nodes(nodes)
    assert reloaded["changed"] == ["backends", "host", "queue.max_waiting"]
    assert reloaded["needs_restart"] == ["host"] and reloaded["backends_added"] == ["n2"]
    assert settings.queue.max_waiting == 20
    assert bad.status_code == 400
    assert "queue.max_waiting" in bad.json()["error"]["message"]
    assert kept is settings


async def test_save_writes_the_running_config_atomically_and_it_loads_back(
    tmp_path: Path,
) -> None:
    config = tmp_path / "corral.yaml"
    _write(config, "# my notes\nqueue:\n  max_waiting: 10\n")
    os.chmod(config, 0o640)
    async with run_gateway([], config_file=config, data_dir=str(tmp_path / "d")) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            await client.put("/admin/config/tenants", json={"weights": {"team-a": 3}})
            saved = await client.post("/admin/config/save")
        running = gw.gw.settings
        assert await actions(gw.gw) == [
            ("config.update", "tenants"),
            ("config.save", str(config)),
        ]
    assert saved.status_code == 200 and saved.json()["file"] == str(config)
    data = yaml.safe_load(config.read_text())
    assert data["queue"] == {"max_waiting": 10} and data["tenants"] == {"weights": {"team-a": 3}}
    assert "health" not in data  # defaults are left out
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert [p.name for p in os.scandir(tmp_path) if p.name.startswith(".")] == []
    assert load_settings(config, environ={}).model_dump() == running.model_dump()


async def test_reload_and_save_need_a_config_source() -> None:
    async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        reload = await client.post("/admin/config/reload")
        save = await client.post("/admin/config/save")
    assert reload.status_code == 409 and "nothing to reload" in reload.json()["error"]["message"]
    assert save.status_code == 409 and "no file to save to" in save.json()["error"]["message"]


async def test_the_fleet_token_is_masked_when_shown_and_kept_when_changed_or_saved(
    tmp_path: Path,
) -> None:
    token = "t0ken-" + "x" * 20
    config = tmp_path / "corral.yaml"
    _write(config, f"fleet:\n  token: {token}\n")
    async with run_gateway([], config_file=config, data_dir=str(tmp_path / "d")) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            shown = await client.get("/admin/config")
            changed = await client.put("/admin/config/queue", json={"max_waiting": 9})
            saved = await client.post("/admin/config/save")
        running = gw.gw.settings
        assert gw.gw.store is not None
        events = await search_audit(gw.gw.store, text=token)
    assert token not in shown.text and shown.json()["config"]["fleet"]["token"] == "**********"
    assert changed.status_code == 200 and changed.json()["changed"] == ["queue.max_waiting"]
    assert running.fleet.token is not None and running.fleet.token.get_secret_value() == token
    assert saved.status_code == 200
    assert yaml.safe_load(config.read_text())["fleet"]["token"] == token
    assert events.items == []  # never in the audit log either
