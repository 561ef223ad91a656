"""Seed 000's routes as aliases onto Corral's API: same answers, and who may call them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from corral.adapters.store.keys import ADMIN_KEY_ENV, create_user_with_key, load_or_create_secret
from corral.sim.launch import NodeSpec, start_nodes, stop_nodes
from tests.helpers import free_port, run_gateway, sim_fleet

MODEL = "llama3.2:1b"
ADMIN = "crl_" + "b" * 40


async def test_generate_and_chat_are_the_ollama_pipelines_streamed_or_not() -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            generated = await client.post(
                "/generate",
                json={"model": MODEL, "prompt": "Write a haiku.", "stream": False,
                      "options": {"temperature": 0.7, "num_predict": 16}},
            )  # fmt: skip
            chatted = await client.post(
                "/chat",
                json={
                    "model": MODEL,
                    "messages": [
                        {"role": "system", "content": "You are concise."},
                        {"role": "user", "content": "Two lines on RAG?"},
                    ],
                    "stream": False,
                },
            )
            async with client.stream(
                "POST", "/generate", json={"model": MODEL, "prompt": "Stream.", "stream": True}
            ) as streamed:
                lines = [json.loads(line) async for line in streamed.aiter_lines() if line]
            missing = await client.post("/chat", json={"model": "nope", "messages": []})
            bad = await client.post("/generate", content=b"{not json")
        records = [r.endpoint for r in fleet.gw.usage]
    assert generated.status_code == 200 and generated.json()["done"] is True
    assert generated.json()["response"] and generated.headers["x-corral-backend"] == "sim0"
    assert chatted.json()["message"]["role"] == "assistant"
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    assert len(lines) > 1 and lines[-1]["done"] is True
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    assert records[:3] == ["/api/generate", "/api/chat", "/api/generate"]


async def test_models_health_stats_and_backends_answer_like_the_seed() -> None:
    async with (
        sim_fleet(NodeSpec(), NodeSpec()) as fleet,
        httpx.AsyncClient(base_url=fleet.url, timeout=30) as client,
    ):
        models = (await client.get("/models")).json()
        tags = (await client.get("/api/tags")).json()
        health = (await client.get("/health")).json()
        await client.post("/generate", json={"model": MODEL, "prompt": "x", "stream": False})
        stats = (await client.get("/stats")).json()
        backends = (await client.get("/backends")).json()
    assert models == tags and MODEL in [m["name"] for m in models["models"]]
    assert health == {
        "ok": True,
        "backends": [{"name": "sim0", "healthy": True}, {"name": "sim1", "healthy": True}],
    }
    assert stats["requests_total"] == 1 and len(stats["backends"]) == 2
    assert [b["name"] for b in backends["backends"]] == ["sim0", "sim1"]


async def test_health_is_not_ok_without_a_backend_that_can_serve() -> None:
    async with (
        run_gateway([f"http://127.0.0.1:{free_port()}"]) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["ok"] is False and health.json()["backends"][0]["healthy"] is False


async def test_backends_register_and_deregister_by_name_or_url() -> None:
    extra = await start_nodes([NodeSpec(name="extra", models=("gemma3:4b",))])
    try:
        async with sim_fleet(NodeSpec()) as fleet:
            async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
                made = await client.post("/backends/register", json={"url": extra[0].url})
                name = made.json()["name"]
                by_url = await client.post("/backends/deregister", json={"url": extra[0].url})
                again = await client.post(
                    "/backends/register", json={"name": "x", "url": extra[0].url}
                )
                by_name = await client.post("/backends/deregister", json={"name": "x"})
                neither = await client.post("/backends/deregister", json={})
                unknown = await client.post("/backends/deregister", json={"name": "nope"})
                config = await client.post("/backends/deregister", json={"name": "sim0"})
            assert set(fleet.gw.fleet.backends) == {"sim0"}
    finally:
        await stop_nodes(extra)
    assert made.status_code == 201 and name == extra[0].url.removeprefix("http://")
    assert by_url.status_code == 200 and by_url.json()["name"] == name
    assert (again.status_code, by_name.status_code) == (201, 200)
    assert neither.status_code == 400
    assert unknown.status_code == 404 and config.status_code == 409


async def test_the_aliases_ask_for_the_scope_of_what_they_stand_for(tmp_path: Path) -> None:
    extra = await start_nodes([NodeSpec(name="extra", models=("gemma3:4b",))])
    try:
        async with sim_fleet(
            NodeSpec(),
            data_dir=str(tmp_path),
            auth={"mode": "on"},
            environ={ADMIN_KEY_ENV: ADMIN},
        ) as fleet:
            gw = fleet.gw
            assert gw.store is not None
            secret = load_or_create_secret(tmp_path / "secret.key")
            _, alice = await create_user_with_key(gw.store, "alice", secret)
            await gw.auth.reload()
            user = {"Authorization": f"Bearer {alice.plaintext}"}
            admin = {"Authorization": f"Bearer {ADMIN}"}
            generate = {"model": MODEL, "prompt": "x", "stream": False}
            async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
                health = await client.get("/health")
                open_models = await client.get("/models")
                user_models = await client.get("/models", headers=user)
                open_generate = await client.post("/generate", json=generate)
                user_generate = await client.post("/generate", json=generate, headers=user)
                user_chat = await client.post(
                    "/chat",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                    headers=user,
                )
                register = {"name": "extra", "url": extra[0].url}
                user_register = await client.post("/backends/register", json=register, headers=user)
                user_stats = await client.get("/stats", headers=user)
                open_backends = await client.get("/backends")
                admin_register = await client.post(
                    "/backends/register", json=register, headers=admin
                )
                admin_stats = await client.get("/stats", headers=admin)
    finally:
        await stop_nodes(extra)
    assert health.status_code == 200
    assert open_models.status_code == 401 and isinstance(open_models.json()["error"], str)
    assert user_models.status_code == 200
    assert open_generate.status_code == 401 and isinstance(open_generate.json()["error"], str)
    assert (user_generate.status_code, user_chat.status_code) == (200, 200)
    assert (user_register.status_code, user_stats.status_code) == (403, 403)
    assert open_backends.status_code == 401
    assert (admin_register.status_code, admin_stats.status_code) == (201, 200)
