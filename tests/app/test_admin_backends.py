"""/admin/backends on a live gateway: the list, registering (probe first, store, fleet,
all or nothing), deregistering with requests in flight, restarts, enable/disable,
patch, refresh, and an audit row for every change."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.adapters.store.audit import search_audit
from corral.adapters.store.backends import list_backends, register_backend
from corral.app.gateway import Gateway
from corral.sim.launch import NodeSpec, SimNode, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig
from corral.sim.vllm_launch import VllmSpec
from tests.helpers import FAST_SIM, free_port, run_gateway, sim_fleet, until

MODEL = "llama3.2:1b"
ONLY_EXTRA = "gemma3:4b"  # held by the extra node alone
# Speed 1: a 600-token stream takes a couple of seconds, long enough to act mid-stream.
STEADY = NodeConfig(speed=1.0, jitter=0.0)


@asynccontextmanager
async def extra_node(config: NodeConfig = FAST_SIM) -> AsyncIterator[SimNode]:
    nodes = await start_nodes(
        [NodeSpec(name="extra", models=(ONLY_EXTRA,), loaded=(ONLY_EXTRA,), config=config)]
    )
    try:
        yield nodes[0]
    finally:
        await stop_nodes(nodes)


async def actions(gw: Gateway, target: str) -> list[str]:
    assert gw.store is not None
    found = await search_audit(gw.store, target=target, limit=100)
    return [e.action for e in reversed(found.items)]


async def test_the_list_shows_each_backend_live() -> None:
    async with sim_fleet(NodeSpec(), NodeSpec()) as fleet:
        fleet.gw.telemetry["sim1"] = {"cpu_percent": 12.5, "gpus": []}
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            served = await client.post(
                "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}
            )
            listed = (await client.get("/admin/backends")).json()["backends"]
            one = await client.get("/admin/backends/sim1")
            unknown = await client.get("/admin/backends/nope")
    assert [b["name"] for b in listed] == ["sim0", "sim1"]
    by_name = {b["name"]: b for b in listed}
    used = by_name[served.headers["x-corral-backend"]]
    assert used["served"] == 1 and used["in_flight"] == 0
    assert [m["model"] for m in used["loaded"]] == [MODEL]
    assert 0 < used["loaded"][0]["expires_in_s"] <= 300
    for b in listed:
        assert (b["origin"], b["kind"], b["healthy"], b["enabled"]) == (
            "config",
            "ollama",
            True,
            True,
        )
        assert MODEL in b["models"] and b["version"]
        assert b["breakers"] == [] and b["last_error"] is None
    assert one.json()["telemetry"] == {"cpu_percent": 12.5, "gpus": []}
    assert by_name["sim0"]["telemetry"] is None
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "name"


async def test_a_registered_backend_is_probed_stored_audited_and_routed_to() -> None:
    async with sim_fleet(NodeSpec()) as fleet, extra_node() as node:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            before = await client.post(
                "/api/generate", json={"model": ONLY_EXTRA, "prompt": "hi", "stream": False}
            )
            made = await client.post(
                "/admin/backends",
                json={"name": "extra", "url": node.url, "max_concurrency": 2, "tags": ["gpu"]},
            )
            after = await client.post(
                "/api/generate", json={"model": ONLY_EXTRA, "prompt": "hi", "stream": False}
            )
        gw = fleet.gw
        assert gw.store is not None
        stored = await list_backends(gw.store)
        assert before.status_code == 404
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["origin"], body["healthy"], body["max_concurrency"]) == ("registered", True, 2)
        assert body["models"] == [ONLY_EXTRA] and body["tags"] == ["gpu"]
        assert after.status_code == 200 and after.headers["x-corral-backend"] == "extra"
        assert [(b.name, b.url, b.options) for b in stored] == [
            ("extra", node.url, {"max_concurrency": 2, "tags": ["gpu"]})
        ]
        events = await search_audit(gw.store, action="backend.register")
        assert [(e.actor, e.target) for e in events.items] == [("local", "extra")]
        assert events.items[0].after is not None and events.items[0].after["url"] == node.url


async def _refused(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/admin/backends", json=body)
    assert resp.status_code == 400, resp.text
    error: dict[str, Any] = resp.json()["error"]
    return error


async def test_a_url_that_is_not_an_engine_of_its_kind_is_refused_and_nothing_kept() -> None:
    vllm = await start_nodes([VllmSpec(name="vllm", model="Qwen/Qwen2.5-0.5B-Instruct")])
    try:
        async with sim_fleet(NodeSpec()) as fleet:
            async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
                silent = await _refused(
                    client, {"name": "x", "url": f"http://127.0.0.1:{free_port()}"}
                )
                wrong_kind = await _refused(client, {"name": "x", "url": vllm[0].url})
                right_kind = await client.post(
                    "/admin/backends", json={"name": "v", "url": vllm[0].url, "kind": "openai"}
                )
            gw = fleet.gw
            assert gw.store is not None
            assert set(gw.fleet.backends) == {"sim0", "v"}
            assert [b.name for b in await list_backends(gw.store)] == ["v"]
    finally:
        await stop_nodes(vllm)
    assert silent["param"] == "url" and "nothing answered at http://127.0.0.1:" in silent["message"]
    assert "is not an Ollama server: GET /api/version answered HTTP 404" in wrong_kind["message"]
    assert "use kind openai" in wrong_kind["message"]
    assert right_kind.status_code == 201 and right_kind.json()["kind"] == "openai"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "ftp://gpu1:11434"}, "url"),
        ({"url": "http://gpu1"}, "url"),
        ({"url": "http://gpu1:11434", "max_concurrency": 0}, "max_concurrency"),
        ({"url": "http://gpu1:11434", "tags": ["two words"]}, "tags"),
        ({"url": "http://gpu1:11434", "color": "red"}, "color"),
        ({"name": "no url"}, "url"),
    ],
)
async def test_bad_registration_fields_are_400s_naming_the_field(
    body: dict[str, Any], param: str
) -> None:
    async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        error = await _refused(client, body)
        assert gw.gw.store is not None
        assert await list_backends(gw.gw.store) == []
    assert error["param"] == param, error
    assert error["message"].startswith(param)


async def test_a_taken_name_is_409_and_nothing_is_half_registered() -> None:
    async with sim_fleet(NodeSpec()) as fleet, extra_node() as node:
        gw = fleet.gw
        assert gw.store is not None
        # A row in the store the fleet does not have: the store write fails after the
        # fleet took the backend, which must let it go again.
        await register_backend(gw.store, "http://127.0.0.1:9", name="ghost")
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            as_config = await client.post("/admin/backends", json={"name": "sim0", "url": node.url})
            as_ghost = await client.post("/admin/backends", json={"name": "ghost", "url": node.url})
            first = await client.post("/admin/backends", json={"name": "extra", "url": node.url})
            again = await client.post("/admin/backends", json={"name": "extra", "url": node.url})
        assert (as_config.status_code, as_ghost.status_code) == (409, 409)
        assert (first.status_code, again.status_code) == (201, 409)
        assert again.json()["error"]["param"] == "name"
        assert set(gw.fleet.backends) == {"sim0", "extra"}
        assert [b.name for b in await list_backends(gw.store)] == ["extra", "ghost"]
        assert gw.fleet.backends["sim0"].origin == "config"


async def test_registered_backends_and_their_changes_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with extra_node() as node:
        async with (
            run_gateway([], data_dir=str(data)) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        ):
            made = await client.post(
                "/admin/backends",
                json={"name": "extra", "url": node.url, "labels": {"rack": "r1"}},
            )
            assert made.status_code == 201, made.text
            await client.post("/admin/backends/extra/disable")
            patched = await client.patch(
                "/admin/backends/extra", json={"max_concurrency": 7, "tags": ["eu"]}
            )
            assert patched.json()["persisted"] is True
        async with run_gateway([], data_dir=str(data)) as gw:
            state = gw.gw.fleet.backends["extra"]
            assert (state.origin, state.enabled, state.max_concurrency) == ("registered", False, 7)
            assert (state.tags, state.labels, state.healthy) == (("eu",), {"rack": "r1"}, True)
            assert ONLY_EXTRA in state.models
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
                gone = await client.delete("/admin/backends/extra")
            assert gone.status_code == 200 and gone.json()["name"] == "extra"
            assert await actions(gw.gw, "extra") == [
                "backend.register",
                "backend.update",  # disable
                "backend.update",  # patch
                "backend.deregister",
            ]
        async with run_gateway([], data_dir=str(data)) as gw:
            assert "extra" not in gw.gw.fleet.backends


async def _first_line(lines: AsyncIterator[str]) -> dict[str, Any]:
    first: dict[str, Any] = json.loads(await anext(lines))
    return first


async def test_a_request_running_on_a_deregistered_backend_finishes_cleanly() -> None:
    async with sim_fleet(NodeSpec()) as fleet, extra_node(STEADY) as node:
        gw = fleet.gw
        async with httpx.AsyncClient(base_url=fleet.url, timeout=60) as client:
            made = await client.post("/admin/backends", json={"name": "extra", "url": node.url})
            assert made.status_code == 201
            body = {"model": ONLY_EXTRA, "prompt": "hi", "options": {"num_predict": 600}}
            async with client.stream("POST", "/api/generate", json=body) as stream:
                lines = stream.aiter_lines()
                assert "response" in await _first_line(lines)
                state = gw.fleet.backends["extra"]
                gone = await client.delete("/admin/backends/extra")
                assert gone.status_code == 200 and gone.json()["in_flight"] == 1
                assert "extra" not in gw.fleet.backends and gw.fleet.retiring == 1
                rest = [json.loads(line) async for line in lines if line]
            after = await client.post(
                "/api/generate", json={"model": ONLY_EXTRA, "prompt": "hi", "stream": False}
            )
    assert stream.status_code == 200
    assert rest[-1]["done"] is True and "error" not in rest[-1]
    assert len(rest) > 100
    # Its slot came back on the old state; its connections were closed after it.
    assert state.in_flight == 0 and gw.fleet.scheduler.in_flight == 0
    assert gw.fleet.retiring == 0
    assert after.status_code == 404


async def test_a_whole_answer_pending_on_a_deregistered_backend_still_arrives() -> None:
    async with sim_fleet(NodeSpec()) as fleet, extra_node(STEADY) as node:
        gw = fleet.gw
        async with httpx.AsyncClient(base_url=fleet.url, timeout=60) as client:
            made = await client.post("/admin/backends", json={"name": "extra", "url": node.url})
            assert made.status_code == 201
            body = {
                "model": ONLY_EXTRA,
                "prompt": "hi",
                "stream": False,
                "options": {"num_predict": 600},
            }
            pending = asyncio.create_task(client.post("/api/generate", json=body))
            await until(lambda: gw.fleet.backends["extra"].in_flight == 1)
            gone = await client.delete("/admin/backends/extra")
            answer = await pending
    assert gone.status_code == 200
    assert answer.status_code == 200, answer.text
    assert answer.json()["done"] is True and answer.json()["eval_count"] == 600
    assert gw.fleet.retiring == 0 and gw.fleet.scheduler.in_flight == 0


async def test_only_registered_backends_can_be_deregistered() -> None:
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(base_url=fleet.url) as client:
        config = await client.delete("/admin/backends/sim0")
        unknown = await client.delete("/admin/backends/nope")
    assert config.status_code == 409
    assert "managed by the config file" in config.json()["error"]["message"]
    assert unknown.status_code == 404
    assert "sim0" in fleet.gw.fleet.backends


async def test_a_draining_backend_finishes_its_requests_and_takes_no_new_ones() -> None:
    async with sim_fleet(NodeSpec(config=STEADY, loaded=(MODEL,))) as fleet:
        gw = fleet.gw
        async with httpx.AsyncClient(base_url=fleet.url, timeout=60) as client:
            body = {"model": MODEL, "prompt": "hi", "options": {"num_predict": 600}}
            async with client.stream("POST", "/api/generate", json=body) as stream:
                lines = stream.aiter_lines()
                await _first_line(lines)
                drain = (await client.post("/admin/backends/sim0/drain")).json()
                refused = await client.post(
                    "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}
                )

                async def read_rest() -> list[dict[str, Any]]:
                    return [json.loads(line) async for line in lines if line]

                reader = asyncio.create_task(read_rest())
                waited = (await client.post("/admin/backends/sim0/drain?wait_s=30")).json()
                rest = await reader
            undrained = (await client.post("/admin/backends/sim0/undrain")).json()
            served = await client.post(
                "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}
            )
        assert (drain["draining"], drain["in_flight"], drain["drained"]) == (True, 1, False)
        assert refused.status_code == 503 and "draining" in refused.json()["error"]
        assert (waited["drained"], waited["in_flight"]) == (True, 0)
        assert rest[-1]["done"] is True
        assert (undrained["draining"], served.status_code) == (False, 200)
        assert await actions(gw, "sim0") == ["backend.drain", "backend.drain", "backend.undrain"]


async def test_a_disabled_backend_gets_nothing_until_enabled() -> None:
    async with sim_fleet(NodeSpec(), NodeSpec()) as fleet:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            off = (await client.post("/admin/backends/sim0/disable")).json()
            went = [
                (
                    await client.post(
                        "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}
                    )
                ).headers["x-corral-backend"]
                for _ in range(4)
            ]
            on = (await client.post("/admin/backends/sim0/enable")).json()
        assert (off["enabled"], on["enabled"]) == (False, True)
        assert went == ["sim1"] * 4
        assert fleet.gw.fleet.backends["sim0"].enabled
        assert await actions(fleet.gw, "sim0") == ["backend.disable", "backend.enable"]


async def test_patching_a_config_backend_lasts_until_restart_and_checks_each_field() -> None:
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(base_url=fleet.url) as client:
        ok = await client.patch(
            "/admin/backends/sim0",
            json={"max_concurrency": 9, "weight": 2.5, "tags": ["a100"], "labels": {"rack": "r2"}},
        )
        bad = {
            "max_concurrency": await client.patch(
                "/admin/backends/sim0", json={"max_concurrency": 0}
            ),
            "weight": await client.patch("/admin/backends/sim0", json={"weight": -1}),
            "tags": await client.patch("/admin/backends/sim0", json={"tags": ["a,b"]}),
            "color": await client.patch("/admin/backends/sim0", json={"color": "red"}),
            "body": await client.patch("/admin/backends/sim0", json={}),
        }
        reset = await client.patch("/admin/backends/sim0", json={"max_concurrency": None})
        audited = await actions(fleet.gw, "sim0")
    body = ok.json()
    assert ok.status_code == 200
    assert (body["persisted"], "until the gateway restarts" in body["note"]) == (False, True)
    b = body["backend"]
    assert (b["max_concurrency"], b["weight"], b["tags"], b["labels"]) == (
        9,
        2.5,
        ["a100"],
        {"rack": "r2"},
    )
    for param, resp in bad.items():
        assert resp.status_code == 400, (param, resp.text)
        assert resp.json()["error"]["param"] == param
    state = fleet.gw.fleet.backends["sim0"]
    assert (state.weight, state.tags) == (2.5, ("a100",))
    assert reset.json()["backend"]["max_concurrency"] == 4  # the kind's default
    assert audited == ["backend.update", "backend.update"]


async def test_refresh_reads_a_new_model_at_once() -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        node = fleet.node("sim0")
        async with httpx.AsyncClient(timeout=30) as client:
            pulled = await client.post(
                f"{node.url}/api/pull", json={"model": "mistral:7b", "stream": False}
            )
            assert pulled.status_code == 200
            stale = fleet.gw.fleet.backends["sim0"].models
            fresh = (await client.post(f"{fleet.url}/admin/backends/sim0/refresh")).json()
        audited = await actions(fleet.gw, "sim0")
    assert "mistral:7b" not in stale
    assert "mistral:7b" in fresh["models"] and fresh["last_check_ago_s"] < 5
    assert audited == ["backend.refresh"]


async def test_seed_004_registration_maps_its_fields() -> None:
    async with (
        sim_fleet(NodeSpec()) as fleet,
        extra_node() as node,
        httpx.AsyncClient(base_url=fleet.url, timeout=30) as client,
    ):
        made = await client.post(
            "/admin/backends/register",
            json={
                "name": "ollama-gpu-1",
                "url": node.url,
                "engine": "ollama",
                "max_concurrent": 3,
                "gpu_memory_gb": 24,
            },
        )
        bad = await client.post(
            "/admin/backends/register",
            json={"name": "x", "url": node.url, "engine": "ollama", "max_concurrent": 0},
        )
        wrong = await client.post(
            "/admin/backends/register", json={"name": "y", "url": node.url, "engine": "vllm"}
        )
        enabled = await client.post("/admin/backends/ollama-gpu-1/disable")
    b = made.json()
    assert made.status_code == 201
    assert (b["kind"], b["max_concurrency"], b["vram_gb"]) == ("ollama", 3, 24.0)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_concurrent"
    assert wrong.status_code == 400 and "not an OpenAI-compatible server" in wrong.text
    assert enabled.json()["enabled"] is False


async def test_an_openai_kind_backend_lists_models_by_its_own_names() -> None:
    (vllm,) = await start_nodes([VllmSpec(name="v", model="Qwen/Qwen2.5-7B-Instruct")])
    try:
        async with (
            run_gateway([{"name": "v", "url": vllm.url, "kind": "openai"}]) as gw,
            httpx.AsyncClient(base_url=gw.url) as client,
        ):
            body = (await client.get("/admin/backends/v")).json()
    finally:
        await stop_nodes([vllm])
    assert body["models"] == ["Qwen/Qwen2.5-7B-Instruct"]  # not "...:latest"
    assert [m["model"] for m in body["loaded"]] == ["Qwen/Qwen2.5-7B-Instruct"]
