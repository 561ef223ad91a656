"""Model management across the fleet (/admin/models...): simulated Ollama nodes and a
simulated vLLM server behind a real gateway, the effects checked on the nodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.adapters.store import Store
from corral.adapters.store.audit import search_audit
from corral.adapters.store.keys import ADMIN_KEY_ENV, create_user_with_key, load_or_create_secret
from corral.sim.faults import Faults
from corral.sim.launch import NodeSpec, SimNode, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig, VllmConfig
from corral.sim.vllm_launch import VllmNode, VllmSpec
from tests.helpers import FAST_SIM, RunningGateway, run_gateway

LLAMA = "llama3.2:1b"
QWEN = "qwen2.5:0.5b"
EMBED = "nomic-embed-text:latest"
VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct"
ADMIN = "crl_" + "m" * 40


@dataclass
class Fleet:
    gateway: RunningGateway
    sim0: SimNode
    sim1: SimNode
    vllm0: VllmNode
    client: httpx.AsyncClient


@asynccontextmanager
async def mixed_fleet(
    sim1_faults: Faults | None = None, sim1_config: NodeConfig = FAST_SIM, **overrides: Any
) -> AsyncIterator[Fleet]:
    """sim0 holds three models (llama loaded), sim1 only llama, vllm0 serves Qwen."""
    ollama = await start_nodes(
        [
            NodeSpec(name="sim0", models=(LLAMA, QWEN, EMBED), loaded=(LLAMA,), config=FAST_SIM),
            NodeSpec(
                name="sim1", models=(LLAMA,), config=sim1_config, faults=sim1_faults or Faults()
            ),
        ]
    )
    vllm = await start_nodes(
        [VllmSpec(name="vllm0", model=VLLM_MODEL, config=VllmConfig(speed=50.0, jitter=0.0))]
    )
    backends = [{"name": n.name, "url": n.url} for n in ollama]
    backends.append({"name": "vllm0", "url": vllm[0].url, "kind": "openai"})
    # Probes once a minute: whatever the tests see change, the admin routes refreshed.
    overrides.setdefault("health", {"interval_s": 60, "models_refresh_s": 60})
    try:
        async with (
            run_gateway(backends, **overrides) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        ):
            yield Fleet(gw, ollama[0], ollama[1], vllm[0], client)
    finally:
        await stop_nodes([*ollama, *vllm])


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with mixed_fleet() as f:
        yield f


async def tags(node: SimNode) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=node.url) as c:
        return {m["name"]: m for m in (await c.get("/api/tags")).json()["models"]}


async def ps(node: SimNode) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=node.url) as c:
        return {m["name"]: m for m in (await c.get("/api/ps")).json()["models"]}


async def model_map(fleet: Fleet) -> dict[str, dict[str, Any]]:
    resp = await fleet.client.get("/admin/models")
    assert resp.status_code == 200, resp.text
    return {m["model"]: m for m in resp.json()["models"]}


async def chat(fleet: Fleet, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    return await fleet.client.post("/api/chat", json=body)


def ndjson(resp: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in resp.text.splitlines()]


def by_backend(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["backend"]: r for r in result["results"]}


def error_of(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()["error"]
    return body


# --- the model map -----------------------------------------------------------------


async def test_the_map_shows_holders_residency_size_kind_and_demand(fleet: Fleet) -> None:
    assert (await chat(fleet, LLAMA)).status_code == 200
    assert (await chat(fleet, LLAMA)).status_code == 200
    models = await model_map(fleet)
    assert set(models) == {LLAMA, QWEN, EMBED, VLLM_MODEL}
    llama = models[LLAMA]
    places = {p["backend"]: p for p in llama["backends"]}
    assert set(places) == {"sim0", "sim1"}
    assert places["sim0"]["size"] == (await tags(fleet.sim0))[LLAMA]["size"] > 0
    assert places["sim0"]["kind"] == "ollama" and places["sim0"]["upstream"] == LLAMA
    assert llama["loaded_on"] == ["sim0"]
    expires = datetime.fromisoformat(places["sim0"]["expires_at"])
    assert expires > datetime.now(UTC) and places["sim0"]["expires_in_s"] > 0
    assert places["sim1"]["loaded"] is False and places["sim1"]["expires_at"] is None
    assert llama["demand"]["requests_1m"] == 2 and llama["demand"]["requests_15m"] == 2
    assert llama["demand"]["last_request_at"] is not None
    assert models[QWEN]["demand"]["requests_5m"] == 0
    assert models[QWEN]["demand"]["last_request_at"] is None
    [vllm] = models[VLLM_MODEL]["backends"]
    assert vllm["kind"] == "openai" and vllm["always_loaded"] and vllm["loaded"]
    assert vllm["expires_at"] is None
    assert models[VLLM_MODEL]["loaded_on"] == ["vllm0"]


async def test_configured_logical_models_are_listed_with_their_aliases() -> None:
    logical = [{"name": "chat", "aliases": [LLAMA, "fast"]}, {"name": "nowhere:1b"}]
    async with mixed_fleet(models=logical) as fleet:
        models = await model_map(fleet)
    assert models["chat"]["configured"] is True
    assert models["chat"]["aliases"] == [LLAMA, "fast"]
    assert {p["backend"] for p in models["chat"]["backends"]} == {"sim0", "sim1"}
    assert models["nowhere:1b"]["backends"] == [] and models["nowhere:1b"]["configured"]
    assert models[QWEN]["configured"] is False


# --- pull ----------------------------------------------------------------------------


async def test_pull_streams_one_progress_bar_per_backend_and_a_summary(fleet: Fleet) -> None:
    resp = await fleet.client.post("/admin/models/pull", json={"model": "phi3:mini"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(resp)
    assert lines[0] == {
        "type": "start",
        "model": "phi3:mini",
        "backends": ["sim0", "sim1", "vllm0"],
    }
    assert lines[1] == {
        "type": "done",
        "backend": "vllm0",
        "result": "skipped",
        "reason": "an OpenAI-kind server (vLLM, llama.cpp) serves the model it was started "
        "with: it cannot pull",
    }
    for name in ("sim0", "sim1"):
        progress = [
            line for line in lines if line["type"] == "progress" and line["backend"] == name
        ]
        assert progress[0]["status"] == "pulling manifest"
        assert all(p["completed"] <= p["total"] for p in progress)
        last_bytes = [p for p in progress if p["total"]][-1]
        assert last_bytes["completed"] == last_bytes["total"] > 0
        assert {"type": "done", "backend": name, "result": "ok"} in lines
    overall = [line for line in lines if line["type"] == "overall"]
    assert overall[-1]["finished"] == 2 and overall[-1]["backends"] == 2
    assert overall[-1]["completed"] == overall[-1]["total"] > 0
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["status"] == "success"
    assert {r["backend"]: r["status"] for r in summary["results"]} == {
        "sim0": "ok",
        "sim1": "ok",
        "vllm0": "skipped",
    }
    assert "phi3:mini" in await tags(fleet.sim0) and "phi3:mini" in await tags(fleet.sim1)
    # In the fleet at once, though the next probe is a minute away.
    placed = (await model_map(fleet))["phi3:mini"]["backends"]
    assert {p["backend"] for p in placed} == {"sim0", "sim1"}
    assert (await chat(fleet, "phi3:mini")).status_code == 200


async def test_a_backend_failing_its_pull_is_named_and_the_others_finish() -> None:
    async with mixed_fleet(sim1_faults=Faults(pull_error=1.0)) as fleet:
        body = {"model": "phi3:mini", "backends": ["sim0", "sim1"]}
        lines = ndjson(await fleet.client.post("/admin/models/pull", json=body))
        sim0_tags, sim1_tags = await tags(fleet.sim0), await tags(fleet.sim1)
    assert lines[0]["backends"] == ["sim0", "sim1"]
    assert {
        "type": "done",
        "backend": "sim1",
        "result": "error",
        "error": "max retries exceeded: unexpected EOF",
    } in lines
    summary = lines[-1]
    assert summary["status"] == "partial"
    assert by_backend(summary)["sim1"]["error"] == "max retries exceeded: unexpected EOF"
    assert by_backend(summary)["sim0"]["status"] == "ok"
    assert "phi3:mini" in sim0_tags and "phi3:mini" not in sim1_tags


async def test_a_caller_leaving_mid_pull_cancels_it_and_it_is_audited() -> None:
    # phi3:mini is 2.2 GB: about a second of pulling at twice the simulated 1 GB/s.
    async with mixed_fleet(sim1_config=NodeConfig(speed=2.0, jitter=0.0)) as fleet:
        body = {"model": "phi3:mini", "backends": ["sim1"]}
        async with fleet.client.stream("POST", "/admin/models/pull", json=body) as resp:
            async for line in resp.aiter_lines():
                if json.loads(line)["type"] == "progress":
                    break  # and leave
        store = fleet.gateway.gw.store
        assert store is not None
        audit: list[Any] = []

        async def audited() -> bool:
            audit[:] = (await search_audit(store, action="models.pull")).items
            return bool(audit)

        await until_async(audited)
        # Past the time the whole pull would take: it was cancelled, not finished.
        await asyncio.sleep(1.5)
        assert "phi3:mini" not in await tags(fleet.sim1)
    assert audit[0].after["status"] == "error"
    assert audit[0].after["results"] == [
        {"backend": "sim1", "kind": "ollama", "status": "error", "error": "cancelled"}
    ]


async def until_async(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_pull_without_stream_answers_only_the_summary(fleet: Fleet) -> None:
    body = {"model": "gemma3:4b", "backends": ["sim1"], "stream": False}
    resp = await fleet.client.post("/admin/models/pull", json=body)
    assert resp.status_code == 200
    assert resp.json() == {
        "model": "gemma3:4b",
        "status": "success",
        "results": [{"backend": "sim1", "kind": "ollama", "status": "ok"}],
    }
    assert "gemma3:4b" in await tags(fleet.sim1) and "gemma3:4b" not in await tags(fleet.sim0)


async def test_pulling_on_an_openai_kind_server_is_skipped_not_an_error(fleet: Fleet) -> None:
    body = {"model": "phi3:mini", "backends": ["vllm0"], "stream": False}
    resp = await fleet.client.post("/admin/models/pull", json=body)
    assert resp.status_code == 200
    result = resp.json()
    assert result["status"] == "skipped"
    assert "cannot pull" in by_backend(result)["vllm0"]["reason"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": ""}, "model"),
        ({"model": "   "}, "model"),
        ({}, "model"),
        ({"model": 7}, "model"),
        ({"model": "phi3:mini", "backends": []}, "backends"),
        ({"model": "phi3:mini", "backends": [""]}, "backends[0]"),
        ({"model": "phi3:mini", "backend": "sim0"}, "backend"),
    ],
)
async def test_bad_pull_bodies_are_400s_naming_the_field(
    fleet: Fleet, body: dict[str, Any], param: str
) -> None:
    resp = await fleet.client.post("/admin/models/pull", json=body)
    assert resp.status_code == 400, resp.text
    assert error_of(resp)["param"] == param


async def test_an_unknown_backend_is_a_404_naming_it(fleet: Fleet) -> None:
    body = {"model": "phi3:mini", "backends": ["sim0", "gpu9"]}
    resp = await fleet.client.post("/admin/models/pull", json=body)
    assert resp.status_code == 404
    assert error_of(resp)["param"] == "backends[1]"
    assert "gpu9" in error_of(resp)["message"]
    assert "phi3:mini" not in await tags(fleet.sim0)  # nothing half-done


async def test_a_body_that_is_not_json_is_a_400(fleet: Fleet) -> None:
    resp = await fleet.client.post(
        "/admin/models/pull", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400


# --- delete and copy ------------------------------------------------------------------


async def test_delete_removes_the_model_from_every_holder(fleet: Fleet) -> None:
    resp = await fleet.client.post("/admin/models/delete", json={"model": LLAMA})
    assert resp.status_code == 200
    result = resp.json()
    assert result["status"] == "success"
    assert {b: r["status"] for b, r in by_backend(result).items()} == {"sim0": "ok", "sim1": "ok"}
    assert LLAMA not in await tags(fleet.sim0) and LLAMA not in await tags(fleet.sim1)
    assert LLAMA not in await model_map(fleet)
    again = await fleet.client.post("/admin/models/delete", json={"model": LLAMA})
    assert again.status_code == 404 and error_of(again)["param"] == "model"


async def test_delete_on_named_backends_only(fleet: Fleet) -> None:
    body = {"model": "llama3.2:1b", "backends": ["sim1", "vllm0"]}
    result = (await fleet.client.post("/admin/models/delete", json=body)).json()
    assert by_backend(result)["sim1"]["status"] == "ok"
    assert by_backend(result)["vllm0"]["status"] == "skipped"
    assert LLAMA in await tags(fleet.sim0) and LLAMA not in await tags(fleet.sim1)
    holders = [p["backend"] for p in (await model_map(fleet))[LLAMA]["backends"]]
    assert holders == ["sim0"]


async def test_a_backend_answering_404_is_reported_with_the_others(fleet: Fleet) -> None:
    body = {"model": QWEN, "backends": ["sim0", "sim1"]}
    result = (await fleet.client.post("/admin/models/delete", json=body)).json()
    assert result["status"] == "partial"
    assert by_backend(result)["sim0"]["status"] == "ok"
    assert by_backend(result)["sim1"]["status"] == "error"
    assert "not found" in by_backend(result)["sim1"]["error"]


async def test_copy_makes_the_new_name_on_every_holder(fleet: Fleet) -> None:
    body = {"source": "llama3.2:1b", "destination": "mine:latest"}
    resp = await fleet.client.post("/admin/models/copy", json=body)
    assert resp.status_code == 200 and resp.json()["status"] == "success"
    assert "mine:latest" in await tags(fleet.sim0) and "mine:latest" in await tags(fleet.sim1)
    holders = {p["backend"] for p in (await model_map(fleet))["mine:latest"]["backends"]}
    assert holders == {"sim0", "sim1"}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"source": "nope:1b", "destination": "x"}, 404, "source"),
        ({"source": LLAMA, "destination": ""}, 400, "destination"),
        ({"source": LLAMA}, 400, "destination"),
        ({"source": LLAMA, "destination": "x", "backends": ["gpu9"]}, 404, "backends[0]"),
    ],
)
async def test_bad_copies_are_refused_naming_the_field(
    fleet: Fleet, body: dict[str, Any], status: int, param: str
) -> None:
    resp = await fleet.client.post("/admin/models/copy", json=body)
    assert resp.status_code == status, resp.text
    assert error_of(resp)["param"] == param


# --- warm and unload ---------------------------------------------------------------------


async def test_warm_loads_where_the_scheduler_would_route(fleet: Fleet) -> None:
    resp = await fleet.client.post("/admin/models/warm", json={"model": QWEN, "keep_alive": "30m"})
    assert resp.status_code == 200, resp.text
    [result] = resp.json()["results"]
    assert result["backend"] == "sim0" and result["status"] == "ok" and result["loaded"]
    assert result["reason"].startswith("corral")  # the routing policy's own reason
    resident = (await ps(fleet.sim0))[QWEN]
    left = datetime.fromisoformat(resident["expires_at"]) - datetime.now(UTC)
    assert 25 * 60 < left.total_seconds() <= 30 * 60
    assert (await model_map(fleet))[QWEN]["loaded_on"] == ["sim0"]


async def test_warm_n_copies_and_forever(fleet: Fleet) -> None:
    body = {"model": LLAMA, "copies": 2, "keep_alive": -1}
    result = (await fleet.client.post("/admin/models/warm", json=body)).json()
    assert {b: r["status"] for b, r in by_backend(result).items()} == {"sim0": "ok", "sim1": "ok"}
    assert all(r["loaded"] and "expires_at" not in r for r in result["results"])  # never
    assert LLAMA in await ps(fleet.sim1)
    assert (await model_map(fleet))[LLAMA]["loaded_on"] == ["sim0", "sim1"]


async def test_more_copies_than_holders_warms_what_it_can_and_says_so(fleet: Fleet) -> None:
    result = (
        await fleet.client.post("/admin/models/warm", json={"model": LLAMA, "copies": 5})
    ).json()
    assert result["status"] == "success" and len(result["results"]) == 2
    assert result["message"] == "asked for 5 copies; 2 Ollama backends can load it now"


async def test_an_embedding_model_is_warmed_too(fleet: Fleet) -> None:
    result = (
        await fleet.client.post("/admin/models/warm", json={"model": "nomic-embed-text"})
    ).json()
    assert result["status"] == "success", result
    assert EMBED in await ps(fleet.sim0)


async def test_an_openai_kind_server_says_its_model_is_always_loaded(fleet: Fleet) -> None:
    warm = (await fleet.client.post("/admin/models/warm", json={"model": VLLM_MODEL})).json()
    assert warm["status"] == "success"
    [only] = warm["results"]
    assert only["backend"] == "vllm0" and only["loaded"] is True
    assert "loaded for as long as it runs" in only["reason"]
    unload = (await fleet.client.post("/admin/models/unload", json={"model": VLLM_MODEL})).json()
    assert unload["status"] == "skipped"
    assert by_backend(unload)["vllm0"]["loaded"] is True
    assert "free its memory" in by_backend(unload)["vllm0"]["reason"]


async def test_unload_frees_every_backend_it_is_loaded_on(fleet: Fleet) -> None:
    await fleet.client.post("/admin/models/warm", json={"model": LLAMA, "backends": ["sim1"]})
    assert LLAMA in await ps(fleet.sim1)
    resp = await fleet.client.post("/admin/models/unload", json={"model": LLAMA})
    assert resp.status_code == 200
    result = resp.json()
    assert {b: (r["status"], r["loaded"]) for b, r in by_backend(result).items()} == {
        "sim0": ("ok", False),
        "sim1": ("ok", False),
    }
    assert LLAMA not in await ps(fleet.sim0) and LLAMA not in await ps(fleet.sim1)
    assert LLAMA in await tags(fleet.sim0)  # still on disk
    assert (await model_map(fleet))[LLAMA]["loaded_on"] == []
    again = (await fleet.client.post("/admin/models/unload", json={"model": LLAMA})).json()
    assert again == {
        "model": LLAMA,
        "status": "skipped",
        "results": [],
        "message": "not loaded on any Ollama backend",
    }


async def test_warming_a_model_a_named_backend_lacks_is_that_backends_error(fleet: Fleet) -> None:
    body = {"model": QWEN, "backends": ["sim0", "sim1"]}
    result = (await fleet.client.post("/admin/models/warm", json=body)).json()
    assert result["status"] == "partial"
    assert by_backend(result)["sim0"]["status"] == "ok"
    assert "not found" in by_backend(result)["sim1"]["error"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": ""}, 400, "model"),
        ({"model": "nope:7b"}, 404, "model"),
        ({"model": LLAMA, "keep_alive": "ten minutes"}, 400, "keep_alive"),
        ({"model": LLAMA, "keep_alive": 0}, 400, "keep_alive"),
        ({"model": LLAMA, "keep_alive": True}, 400, "keep_alive"),
        ({"model": LLAMA, "copies": 0}, 400, "copies"),
        ({"model": LLAMA, "copies": 2, "backends": ["sim0"]}, 400, "copies"),
        ({"model": LLAMA, "backends": ["gpu9"]}, 404, "backends[0]"),
    ],
)
async def test_bad_warm_requests_are_refused_naming_the_field(
    fleet: Fleet, body: dict[str, Any], status: int, param: str
) -> None:
    resp = await fleet.client.post("/admin/models/warm", json=body)
    assert resp.status_code == status, resp.text
    assert error_of(resp)["param"] == param
    assert QWEN not in await ps(fleet.sim0)


# --- idle models and recommendations ---------------------------------------------------


async def test_idle_lists_loaded_models_nobody_asked_for_lately(fleet: Fleet) -> None:
    await fleet.client.post("/admin/models/warm", json={"model": QWEN})
    fresh = (await fleet.client.get("/admin/models/idle", params={"window_s": 600})).json()
    assert fresh["models"] == []  # the gateway has not been up that long
    await chat(fleet, LLAMA)  # served by sim0, where llama is loaded
    resp = await fleet.client.get("/admin/models/idle", params={"window_s": 0.001})
    body = resp.json()
    listed = {(m["model"], m["backend"]) for m in body["models"]}
    assert (QWEN, "sim0") in listed
    qwen = next(m for m in body["models"] if m["model"] == QWEN)
    assert qwen["last_request_at"] is None and qwen["size"] > 0 and qwen["expires_at"]
    llama = next(m for m in body["models"] if m["model"] == LLAMA)
    assert llama["last_request_at"] is not None
    assert llama["idle_s"] < qwen["idle_s"]


@pytest.mark.parametrize("window", ["0", "-5", "7200", "soon"])
async def test_an_idle_window_out_of_range_is_a_400(fleet: Fleet, window: str) -> None:
    resp = await fleet.client.get("/admin/models/idle", params={"window_s": window})
    assert resp.status_code == 400 and error_of(resp)["param"] == "window_s"


async def test_recommendations_warm_what_is_asked_for_and_pull_what_nobody_holds(
    fleet: Fleet,
) -> None:
    for _ in range(3):
        assert (await chat(fleet, LLAMA)).status_code == 200
        assert (await chat(fleet, "phi3:mini")).status_code == 404
    nothing = (await fleet.client.get("/admin/models/recommendations")).json()
    assert [r["model"] for r in nothing["recommendations"]] == ["phi3:mini"]  # llama is loaded
    await fleet.client.post("/admin/models/unload", json={"model": LLAMA})
    resp = await fleet.client.get(
        "/admin/models/recommendations", params={"window_s": 300, "min_requests": 3}
    )
    recs = {r["model"]: r for r in resp.json()["recommendations"]}
    assert recs[LLAMA]["action"] == "warm" and recs[LLAMA]["backends"] == ["sim0"]
    assert recs[LLAMA]["requests"] == 3 and recs[LLAMA]["loaded_on"] == []
    assert "loaded nowhere" in recs[LLAMA]["reason"]
    assert (
        recs["phi3:mini"]["action"] == "pull"
        and "no backend holds it" in recs["phi3:mini"]["reason"]
    )
    fewer = await fleet.client.get("/admin/models/recommendations", params={"min_requests": 4})
    assert fewer.json()["recommendations"] == []
    bad = await fleet.client.get("/admin/models/recommendations", params={"min_requests": 0})
    assert bad.status_code == 400 and error_of(bad)["param"] == "min_requests"


# --- who may call, and the audit log ----------------------------------------------------


async def test_model_routes_need_the_admin_scope_and_are_audited(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    await store.upgrade()
    secret = load_or_create_secret(tmp_path / "secret.key")
    _, alice = await create_user_with_key(store, "alice", secret)
    await store.close()
    async with mixed_fleet(
        data_dir=str(tmp_path), auth={"mode": "on"}, environ={ADMIN_KEY_ENV: ADMIN}
    ) as fleet:
        client = fleet.client
        body = {"model": QWEN}
        assert (await client.post("/admin/models/warm", json=body)).status_code == 401
        user = {"Authorization": f"Bearer {alice.plaintext}"}
        assert (await client.post("/admin/models/warm", json=body, headers=user)).status_code == 403
        assert (await client.get("/admin/models", headers=user)).status_code == 403
        assert QWEN not in await ps(fleet.sim0)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert (
            await client.post("/admin/models/warm", json=body, headers=admin)
        ).status_code == 200
        pull = {"model": "phi3:mini", "backends": ["sim1"]}
        assert (
            await client.post("/admin/models/pull", json=pull, headers=admin)
        ).status_code == 200
        gw_store = fleet.gateway.gw.store
        assert gw_store is not None
        warmed = (await search_audit(gw_store, action="models.warm")).items
        pulled = (await search_audit(gw_store, action="models.pull")).items
    assert [(e.actor, e.target) for e in warmed] == [("env", QWEN)]
    assert warmed[0].before == {"held_by": ["sim0"], "loaded_on": []}
    assert warmed[0].after["results"][0]["backend"] == "sim0"
    assert [(e.actor, e.target) for e in pulled] == [("env", "phi3:mini")]
    assert pulled[0].after["status"] == "success"
