"""The gateway's node registry over HTTP: heartbeats, the fleet token, bad input, the
admin view, the sweeper, and seed 003's aliases. Engines are simulated Ollama nodes on
real sockets; heartbeats are posted as `corral agent` would (tests/agent runs the agent
itself)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from corral.adapters.store.audit import search_audit
from corral.adapters.store.keys import ADMIN_KEY_ENV
from corral.sim.launch import NodeSpec, SimNode, start_nodes, stop_nodes
from tests.helpers import FAST_SIM, RunningGateway, run_gateway, until

TOKEN = "fleet-token-" + "x" * 20
ADMIN = "crl_" + "a" * 40
FLEET = {"token": TOKEN, "offline_after_s": 30, "remove_after_s": 60}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GiB = 1024**3


def beat(node_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "instance": extra.pop("instance", "i-1"),
        "url": url,
        "kind": "ollama",
        "engine": {"url": url, "version": "0.5.0", "reachable": True},
        "hostname": "gpu-box",
        "addresses": ["10.0.0.5", "2001:db8::5"],
        "cpu": {"percent": 12.5, "count": 8, "load_avg": [0.5, 0.4, 0.3]},
        "memory": {"total_bytes": 64 * GiB, "available_bytes": 40 * GiB, "percent": 37.5},
        "gpus": [],
        "interval_s": 10,
        **extra,
    }


@contextlib.asynccontextmanager
async def engines(n: int = 1) -> AsyncIterator[list[SimNode]]:
    nodes = await start_nodes([NodeSpec(config=FAST_SIM) for _ in range(n)])
    try:
        yield nodes
    finally:
        await stop_nodes(nodes)


@contextlib.asynccontextmanager
async def gateway(
    backends: list[Any] | None = None, **overrides: Any
) -> AsyncIterator[tuple[RunningGateway, httpx.AsyncClient]]:
    overrides.setdefault("fleet", FLEET)
    async with (
        run_gateway(backends or [], **overrides) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
    ):
        yield gw, client


# --- joining -------------------------------------------------------------------------


async def test_first_heartbeat_registers_the_engine_as_a_backend_named_by_the_node() -> None:
    async with engines() as (sim,), gateway() as (gw, client):
        resp = await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {
            "node_id": "n1",
            "registered": True,
            "status": "online",
            "healthy": True,
            "offline_after_s": 30.0,
            "remove_after_s": 60.0,
        }
        state = gw.gw.fleet.backends["n1"]
        assert (state.origin, state.url, state.healthy) == ("agent", sim.url, True)
        assert "llama3.2:1b" in state.models
        assert gw.gw.telemetry["n1"]["cpu"]["percent"] == 12.5
        again = await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        assert again.json()["registered"] is False
        answer = await client.post(
            "/api/generate", json={"model": "llama3.2:1b", "prompt": "hi", "stream": False}
        )
        assert answer.status_code == 200
        assert answer.headers["X-Corral-Backend"] == "n1"


async def test_admin_nodes_shows_status_engine_and_telemetry() -> None:
    async with engines() as (sim,), gateway() as (_, client):
        await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        listed = (await client.get("/admin/nodes")).json()["nodes"]
        shown = (await client.get("/admin/nodes/n1")).json()
        missing = await client.get("/admin/nodes/nope")
    assert [n["id"] for n in listed] == ["n1"]
    assert {**shown, "silent_s": 0} == {**listed[0], "silent_s": 0}
    assert 0 <= shown["silent_s"] < 5
    assert shown["status"] == "online" and shown["healthy"] is True
    assert shown["source"] == "agent" and shown["relay"] is False
    assert shown["addresses"] == ["10.0.0.5", "2001:db8::5"]
    assert shown["engine"]["version"] == "0.5.0"
    assert shown["memory"]["percent"] == 37.5
    assert shown["gpus"] == [] and shown["vram_bytes"] is None
    assert "llama3.2:1b" in shown["models"]
    assert missing.status_code == 404


async def test_gpu_memory_reported_by_the_agent_becomes_the_schedulers_vram() -> None:
    gpus = [
        {"index": i, "name": "L4", "memory_total_bytes": 24 * GiB, "memory_used_bytes": GiB}
        for i in range(2)
    ]
    async with engines() as (sim,), gateway() as (gw, client):
        await client.post("/agent/heartbeat", json=beat("n1", sim.url, gpus=gpus), headers=AUTH)
        assert gw.gw.fleet.backends["n1"].vram_bytes == 48 * GiB
        await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        assert gw.gw.fleet.backends["n1"].vram_bytes is None


async def test_a_new_url_moves_the_node_to_its_new_engine() -> None:
    async with engines(2) as (a, b), gateway() as (gw, client):
        await client.post("/agent/heartbeat", json=beat("n1", a.url), headers=AUTH)
        await client.post("/agent/heartbeat", json=beat("n1", b.url), headers=AUTH)
        assert gw.gw.fleet.backends["n1"].url == b.url
        answer = await client.post(
            "/api/generate", json={"model": "llama3.2:1b", "prompt": "hi", "stream": False}
        )
    assert answer.status_code == 200
    assert b.runtime.counters.requests == 1
    assert a.runtime.counters.requests == 0


# --- who may join ------------------------------------------------------------------------


async def test_a_missing_or_forged_fleet_token_is_401_and_registers_nothing() -> None:
    async with engines() as (sim,), gateway() as (gw, client):
        missing = await client.post("/agent/heartbeat", json=beat("n1", sim.url))
        forged = await client.post(
            "/agent/heartbeat",
            json=beat("n1", sim.url),
            headers={"Authorization": "Bearer " + "y" * 32},
        )
        other_header = await client.post(
            "/agent/heartbeat", json=beat("n1", sim.url), headers={"X-Corral-Fleet-Token": "z" * 20}
        )
        assert gw.gw.fleet.backends == {}
    for resp in (missing, forged, other_header):
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "fleet token" in missing.json()["error"]["message"]


async def test_the_relay_header_also_carries_the_token() -> None:
    async with engines() as (sim,), gateway() as (_, client):
        resp = await client.post(
            "/agent/heartbeat", json=beat("n1", sim.url), headers={"X-Corral-Fleet-Token": TOKEN}
        )
    assert resp.status_code == 200


async def test_without_a_fleet_token_agents_are_refused_with_how_to_configure_one() -> None:
    async with engines() as (sim,), gateway(fleet={}) as (gw, client):
        resp = await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        seed = await client.post("/nodes/heartbeat", json={"node_id": "s", "ipv4": "10.0.0.1"})
        assert gw.gw.fleet.backends == {}
    assert resp.status_code == 403
    assert "fleet.token" in resp.json()["error"]["message"]
    assert "CORRAL_FLEET_TOKEN" in resp.json()["error"]["message"]
    assert seed.status_code == 403


async def test_a_token_is_checked_before_the_body_is_looked_at() -> None:
    async with gateway() as (_, client):
        resp = await client.post("/agent/heartbeat", json={"node_id": 5})
    assert resp.status_code == 401


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"node_id": "has space"}, "node_id"),
        ({"node_id": "a/b"}, "node_id"),
        ({"url": "ftp://x:1"}, "url"),
        ({"url": "http://gpu1"}, "url"),
        ({"kind": "tgi"}, "kind"),
        ({"addresses": ["not-an-ip"]}, "addresses[0]"),
        ({"cpu": {"percent": 250, "count": 8}}, "cpu.percent"),
        ({"gpus": [{"index": 0, "memory_total_bytes": -1, "memory_used_bytes": 0}]}, "gpus[0]"),
        ({"engine": "up"}, "engine"),
        ({"instance": ""}, "instance"),
    ],
)
async def test_a_malformed_heartbeat_is_a_400_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    async with engines() as (sim,), gateway() as (gw, client):
        resp = await client.post(
            "/agent/heartbeat", json=beat("n1", sim.url) | change, headers=AUTH
        )
        assert gw.gw.fleet.backends == {}
        assert gw.gw.nodes.nodes == {}
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"].startswith(field), error
    assert error["message"].startswith(field)


async def test_a_missing_field_and_a_non_json_body_are_400() -> None:
    async with gateway() as (_, client):
        missing = await client.post("/agent/heartbeat", json={"node_id": "n1"}, headers=AUTH)
        garbage = await client.post(
            "/agent/heartbeat",
            content=b"{not json",
            headers={**AUTH, "Content-Type": "application/json"},
        )
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "instance"
    assert garbage.status_code == 400


# --- duplicate ids ---------------------------------------------------------------------------


async def test_a_node_id_taken_by_a_configured_backend_is_409() -> None:
    async with engines(2) as (a, b), gateway([{"name": "gpu1", "url": a.url}]) as (gw, client):
        resp = await client.post("/agent/heartbeat", json=beat("gpu1", b.url), headers=AUTH)
        assert gw.gw.fleet.backends["gpu1"].url == a.url
        assert gw.gw.fleet.backends["gpu1"].origin == "config"
    assert resp.status_code == 409
    assert resp.json()["error"]["param"] == "node_id"
    assert "--node-id" in resp.json()["error"]["message"]


async def test_a_second_live_agent_claiming_the_id_is_409_but_a_restart_is_not() -> None:
    async with engines(2) as (a, b), gateway() as (gw, client):
        first = beat("n1", a.url, instance="first")
        assert (await client.post("/agent/heartbeat", json=first, headers=AUTH)).status_code == 200
        rival = beat("n1", b.url, instance="rival")
        refused = await client.post("/agent/heartbeat", json=rival, headers=AUTH)
        assert gw.gw.fleet.backends["n1"].url == a.url
        restarted = beat("n1", a.url, instance="restarted")  # same engine, new process
        again = await client.post("/agent/heartbeat", json=restarted, headers=AUTH)
    assert refused.status_code == 409
    assert "held by another agent" in refused.json()["error"]["message"]
    assert again.status_code == 200


async def test_an_offline_nodes_id_may_be_taken_over() -> None:
    fleet = {"token": TOKEN, "offline_after_s": 0.3, "remove_after_s": 60}
    async with engines(2) as (a, b), gateway(fleet=fleet) as (gw, client):
        await client.post("/agent/heartbeat", json=beat("n1", a.url, instance="old"), headers=AUTH)
        await until(lambda: gw.gw.nodes.nodes["n1"].status == "offline")
        resp = await client.post(
            "/agent/heartbeat", json=beat("n1", b.url, instance="new"), headers=AUTH
        )
        assert resp.status_code == 200
        assert gw.gw.fleet.backends["n1"].url == b.url


# --- the sweeper -------------------------------------------------------------------------------


async def test_a_silent_node_goes_offline_then_is_removed_and_a_heartbeat_brings_it_back() -> None:
    fleet = {"token": TOKEN, "offline_after_s": 0.4, "remove_after_s": 1.2}
    async with engines() as (sim,), gateway(fleet=fleet) as (gw, client):
        await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        nodes, fleet_ = gw.gw.nodes, gw.gw.fleet
        await until(lambda: nodes.nodes["n1"].status == "offline")
        assert fleet_.backends["n1"].offline and not fleet_.backends["n1"].routable
        refused = await client.post(
            "/api/generate", json={"model": "llama3.2:1b", "prompt": "hi", "stream": False}
        )
        assert refused.status_code == 503
        assert "offline" in refused.json()["error"]
        back = await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        assert back.json()["registered"] is False
        await until(lambda: fleet_.backends["n1"].routable)
        assert nodes.nodes["n1"].status == "online"
        await until(lambda: "n1" not in fleet_.backends, timeout=5)
        assert "n1" not in nodes.nodes and "n1" not in gw.gw.telemetry
        rejoin = await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        assert rejoin.json()["registered"] is True


async def test_failing_probes_degrade_a_node_and_a_heartbeat_after_recovery_restores_it() -> None:
    async with engines() as (sim,):
        port = sim.port
        async with gateway(health={"interval_s": 0.1, "timeout_s": 0.5}) as (gw, client):
            await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
            await stop_nodes([sim])
            nodes = gw.gw.nodes
            await until(lambda: nodes.nodes["n1"].status == "degraded")
            shown = (await client.get("/admin/nodes/n1")).json()
            assert shown["consecutive_failures"] >= 3 and shown["healthy"] is False
            (revived,) = await start_nodes([NodeSpec(port=port, config=FAST_SIM)])
            try:
                await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
                await until(lambda: nodes.nodes["n1"].status == "online")
                assert gw.gw.fleet.backends["n1"].healthy
            finally:
                await stop_nodes([revived])


# --- forgetting ------------------------------------------------------------


async def test_forgetting_a_node_removes_its_backend_and_is_audited() -> None:
    environ = {ADMIN_KEY_ENV: ADMIN}
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    async with (
        engines() as (sim,),
        gateway(auth={"mode": "on"}, environ=environ) as (gw, client),
    ):
        await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        assert (await client.get("/admin/nodes")).status_code == 401
        assert (await client.delete("/admin/nodes/n1", headers=AUTH)).status_code == 401
        gone = await client.delete("/admin/nodes/n1", headers=bearer)
        again = await client.delete("/admin/nodes/n1", headers=bearer)
        assert "n1" not in gw.gw.fleet.backends
        assert gw.gw.store is not None
        events = (await search_audit(gw.gw.store, action="node.forget")).items
    assert gone.status_code == 200 and gone.json()["id"] == "n1"
    assert again.status_code == 404
    assert [(e.actor, e.target) for e in events] == [("env", "n1")]
    assert events[0].before["url"] == sim.url


# --- seed 003 aliases ------------------------------------------------------------


async def test_a_seed_heartbeat_registers_its_ollama_and_nodes_show_in_the_seeds_shape() -> None:
    async with engines() as (sim,), gateway() as (gw, client):
        seed = {
            "node_id": "ollama-node-1",
            "ipv4": "127.0.0.1",
            "port": 8001,
            "models": ["llama3.2:1b"],
            "metadata": {"hostname": "node1", "ollama_port": sim.port},
            "load": {"cpu": 0.25, "memory": 0.45},
        }
        resp = await client.post("/nodes/heartbeat", json=seed, headers=AUTH)
        assert resp.status_code == 200, resp.text
        assert gw.gw.fleet.backends["ollama-node-1"].url == sim.url
        listed = (await client.get("/nodes")).json()
        one = (await client.get("/nodes/ollama-node-1")).json()
        missing = await client.get("/nodes/none")
        admin = (await client.get("/admin/nodes/ollama-node-1")).json()
    assert listed == [one]
    assert one["ipv4"] == "127.0.0.1" and one["ipv6"] is None
    assert one["port"] == sim.port
    assert one["status"] == "online" and one["active_jobs"] == 0 and one["failure_count"] == 0
    assert one["load"] == {"cpu": 0.25, "memory": 0.45}
    assert "llama3.2:1b" in one["models"]
    assert one["metadata"]["hostname"] == "node1"
    assert one["last_seen"].endswith("Z")
    assert admin["source"] == "seed"
    assert missing.status_code == 404


async def test_a_seed_heartbeat_without_an_address_is_400() -> None:
    async with gateway() as (gw, client):
        resp = await client.post(
            "/nodes/heartbeat", json={"node_id": "x", "port": 8001}, headers=AUTH
        )
        assert gw.gw.fleet.backends == {}
    assert resp.status_code == 400
    assert "ipv4 or ipv6" in resp.json()["error"]["message"]


async def test_jobs_is_an_ollama_generate_routed_by_the_scheduler() -> None:
    async with engines() as (sim,), gateway() as (_, client):
        await client.post("/agent/heartbeat", json=beat("n1", sim.url), headers=AUTH)
        job = {
            "model": "llama3.2:1b",
            "prompt": "Why is the sky blue?",
            "options": {"num_predict": 5},
        }
        answer = await client.post("/jobs", json=job | {"stream": False})
        async with client.stream("POST", "/jobs", json=job) as streamed:
            lines = [line async for line in streamed.aiter_lines() if line]
        unknown = await client.post("/jobs", json={"model": "nope", "prompt": "x"})
    assert answer.status_code == 200
    assert answer.headers["X-Corral-Backend"] == "n1"
    assert answer.json()["done"] is True and answer.json()["response"]
    assert len(lines) > 1
    assert unknown.status_code == 404
    assert isinstance(unknown.json()["error"], str)  # Ollama's error shape, like the seed's


async def test_seed_routes_need_keys_when_auth_is_on() -> None:
    environ = {ADMIN_KEY_ENV: ADMIN}
    async with gateway(auth={"mode": "on"}, environ=environ) as (_, client):
        nodes = await client.get("/nodes")
        job = await client.post("/jobs", json={"model": "m", "prompt": "x"})
        admin_nodes = await client.get("/nodes", headers={"Authorization": f"Bearer {ADMIN}"})
    assert nodes.status_code == 401
    assert job.status_code == 401
    assert admin_nodes.status_code == 200 and admin_nodes.json() == []
