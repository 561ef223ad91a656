"""Model management endpoints over real sockets, through the official ``ollama`` client."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import ollama
import pytest

from corral.sim.launch import NodeSpec, SimNode, start_nodes, stop_nodes
from corral.sim.manage import OLLAMA_VERSION
from tests.sim.conftest import StartNode
from tests.sim.support import FAST


async def test_root_and_version(sim: SimNode) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        get = await http.get("/")
        head = await http.head("/")
        version = await http.get("/api/version")
        ps_head = await http.head("/api/ps")
        unknown = await http.get("/api/nothing")
    assert get.status_code == 200 and get.text == "Ollama is running"
    assert head.status_code == 200
    assert version.json() == {"version": OLLAMA_VERSION}
    assert ps_head.status_code == 404  # /api/ps is GET only; gin answers 404
    assert unknown.status_code == 404 and unknown.text == "404 page not found"


async def test_tags_lists_present_models_with_details(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        models = {m.model: m for m in (await client.list()).models}
    assert set(models) == {"llama3.2:1b", "qwen3:4b", "nomic-embed-text:latest"}
    llama = models["llama3.2:1b"]
    assert llama.details is not None
    assert llama.details.family == "llama" and llama.details.parameter_size == "1.2B"
    assert llama.details.quantization_level == "Q8_0" and llama.details.format == "gguf"
    assert llama.digest == hashlib.sha256(b"llama3.2:1b").hexdigest()
    assert llama.size and llama.size > 10**9
    assert llama.modified_at is not None and llama.modified_at.tzinfo is not None


async def test_ps_shows_residency_with_expiry_vram_and_context(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        assert (await client.ps()).models == []
        await client.generate(model="llama3.2:1b", prompt="x", keep_alive="1h")
        await client.generate(model="qwen3:4b", prompt="x", keep_alive=-1)
        ps = {m.model: m for m in (await client.ps()).models}
    llama, qwen = ps["llama3.2:1b"], ps["qwen3:4b"]
    assert llama.expires_at is not None and llama.expires_at.tzinfo is not None
    remaining = llama.expires_at - datetime.now(llama.expires_at.tzinfo)
    assert timedelta(minutes=59) < remaining <= timedelta(hours=1)
    assert qwen.expires_at is not None and qwen.expires_at.year > 2200  # forever
    assert llama.size_vram == llama.size and llama.context_length == 4096
    assert llama.details is not None and llama.details.family == "llama"


async def test_show_describes_a_model_and_404s_an_unknown_one(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        llama = await client.show("llama3.2:1b")
        embed = await client.show("nomic-embed-text")
        with pytest.raises(ollama.ResponseError) as exc:
            await client.show("nope")
    assert llama.capabilities == ["completion", "tools"]
    assert embed.capabilities == ["embedding"]
    assert llama.modelfile and "FROM " in llama.modelfile
    assert llama.template and llama.parameters and "stop" in llama.parameters
    assert llama.details is not None and llama.details.parameter_size == "1.2B"
    assert llama.modelinfo is not None
    assert llama.modelinfo["llama.context_length"] == 131072
    assert exc.value.status_code == 404


async def test_pull_streams_layer_progress_and_makes_the_model_present(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        steps = [p async for p in await client.pull("mistral:7b", stream=True)]
        quiet = await client.pull("anything-13b", stream=False)
        names = {m.model for m in (await client.list()).models}
        r = await client.generate(model="anything-13b", prompt="hi")
    statuses = [s.status for s in steps]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [s for s in steps if s.digest]
    assert layers and all(s.status == f"pulling {s.digest[7:19]}" for s in layers)
    weights = [s for s in layers if s.digest == layers[0].digest]
    assert len(weights) > 2 and weights[-1].completed == weights[-1].total
    assert quiet.status == "success"
    assert {"mistral:7b", "anything-13b:latest"} <= names
    assert r.response


async def test_push_streams_progress_and_404s_unknown(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        steps = [p.status async for p in await client.push("llama3.2:1b", stream=True)]
        with pytest.raises(ollama.ResponseError) as exc:
            await client.push("nope:1b")
    assert steps[0] == "retrieving manifest" and steps[-1] == "success"
    assert any(s.startswith("pushing ") for s in steps[1:-1])
    assert exc.value.status_code == 404


async def test_create_copy_and_delete(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        steps = [
            p.status
            async for p in await client.create(
                model="helper", from_="llama3.2:1b", system="You help.", stream=True
            )
        ]
        shown = await client.show("helper")
        assert (await client.copy("helper", "helper2")).status == "success"
        assert (await client.delete("helper")).status == "success"
        names = {m.model for m in (await client.list()).models}
        errors = []
        for call in (
            client.delete("helper"),
            client.copy("nope", "x"),
            client.create(model="y", from_="nope"),
        ):
            with pytest.raises(ollama.ResponseError) as exc:
                await call
            errors.append(exc.value.status_code)
    assert steps[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("using existing layer sha256:") for s in steps)
    assert shown.modelfile and 'SYSTEM """You help."""' in shown.modelfile
    assert shown.details and shown.details.parent_model == "llama3.2:1b"
    assert "helper2:latest" in names and "helper:latest" not in names
    assert errors == [404, 404, 404]


async def test_blobs_are_checked_against_their_digest(sim: SimNode, tmp_path: Path) -> None:
    data = b"model weights, honestly"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient(base_url=sim.url) as http:
        assert (await http.head(f"/api/blobs/{digest}")).status_code == 404
        wrong = await http.post(f"/api/blobs/{digest}", content=b"other bytes")
        assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
        assert (await http.post(f"/api/blobs/{digest}", content=data)).status_code == 201
        assert (await http.head(f"/api/blobs/{digest}")).status_code == 200
        assert (await http.head("/api/blobs/sha256:short")).status_code == 400
    path = tmp_path / "adapter.bin"
    path.write_bytes(b"another blob")
    async with ollama.AsyncClient(host=sim.url) as client:
        uploaded = await client.create_blob(path)
        made = await client.create(model="from-files:7b", files={"a.gguf": uploaded})
    assert made.status == "success"
    assert sim.model.has_model("from-files:7b")


async def test_progress_endpoints_refuse_bad_bodies(sim: SimNode) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        for path in ("/api/pull", "/api/push", "/api/show", "/api/create"):
            resp = await http.post(path, content=b"{}")
            assert resp.status_code == 400, path
        resp = await http.request("DELETE", "/api/delete", content=json.dumps({}).encode())
        assert resp.status_code == 400


async def test_eviction_shows_in_ps(start: StartNode) -> None:
    node = await start(config=replace(FAST, max_loaded_models=1))
    async with ollama.AsyncClient(host=node.url) as client:
        await client.generate(model="llama3.2:1b", prompt="x")
        before = [m.model for m in (await client.ps()).models]
        await client.generate(model="qwen3:4b", prompt="x")
        after = [m.model for m in (await client.ps()).models]
    assert (before, after) == (["llama3.2:1b"], ["qwen3:4b"])
    assert node.model.stats.evictions == 1


async def test_several_nodes_listen_on_their_own_ports() -> None:
    nodes = await start_nodes([NodeSpec(models=("a:1b",)), NodeSpec(models=("b:1b",))])
    try:
        assert len({n.port for n in nodes}) == 2 and all(n.port for n in nodes)
        async with httpx.AsyncClient() as http:
            names = [
                [m["name"] for m in (await http.get(f"{n.url}/api/tags")).json()["models"]]
                for n in nodes
            ]
        assert names == [["a:1b"], ["b:1b"]]
    finally:
        await stop_nodes(nodes)
