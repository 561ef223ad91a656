"""The official ``ollama`` Python client, unmodified, against Corral over simulated nodes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from corral.sim.launch import NodeSpec
from tests.helpers import SimFleet, sim_fleet


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    async with sim_fleet(
        NodeSpec(models=("llama3.2:1b", "qwen2.5:0.5b", "nomic-embed-text")),
        NodeSpec(models=("llama3.2:1b", "gemma3:4b")),
    ) as running:
        yield running


@pytest.fixture
async def make_client(fleet: SimFleet) -> AsyncIterator[Callable[..., ollama.AsyncClient]]:
    """Official clients pointed at the gateway (closed after the test)."""
    made: list[ollama.AsyncClient] = []

    def make(**kwargs: Any) -> ollama.AsyncClient:
        made.append(ollama.AsyncClient(host=fleet.url, **kwargs))
        return made[-1]

    yield make
    for c in made:
        await c.close()


@pytest.fixture
def client(make_client: Callable[..., ollama.AsyncClient]) -> ollama.AsyncClient:
    return make_client()


async def test_generate_whole_and_streamed(client: ollama.AsyncClient) -> None:
    whole = await client.generate(model="llama3.2:1b", prompt="hello", stream=False)
    assert whole.done and whole.response
    assert whole.eval_count and whole.prompt_eval_count
    stream = await client.generate(model="llama3.2:1b", prompt="hello", stream=True)
    chunks = [c async for c in stream]
    assert len(chunks) > 2
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.response for c in chunks)


async def test_stream_is_the_default_as_in_ollama(fleet: SimFleet) -> None:
    async with httpx.AsyncClient(base_url=fleet.url) as raw:
        resp = await raw.post("/api/generate", json={"model": "llama3.2:1b", "prompt": "x"})
    lines = resp.text.splitlines()
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    assert len(lines) > 2 and '"done":true' in lines[-1].replace(" ", "")


async def test_chat_whole_and_streamed(client: ollama.AsyncClient) -> None:
    messages = [{"role": "user", "content": "hi there"}]
    whole = await client.chat(model="gemma3:4b", messages=messages)
    assert whole.message.role == "assistant" and whole.message.content
    stream = await client.chat(model="gemma3:4b", messages=messages, stream=True)
    parts = [c async for c in stream]
    assert parts[-1].done and parts[-1].eval_count
    assert "".join(p.message.content or "" for p in parts)


async def test_a_name_without_tag_means_latest(client: ollama.AsyncClient) -> None:
    # Ollama reads "nomic-embed-text" as "nomic-embed-text:latest".
    result = await client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) > 8
    legacy = await client.embeddings(model="nomic-embed-text", prompt="a")
    assert list(legacy.embedding) == pytest.approx(result.embeddings[0])


async def test_list_merges_the_fleet_one_entry_per_model(client: ollama.AsyncClient) -> None:
    names = [m.model for m in (await client.list()).models]
    assert sorted(names) == [
        "gemma3:4b",
        "llama3.2:1b",
        "nomic-embed-text:latest",
        "qwen2.5:0.5b",
    ]


async def test_ps_shows_what_is_loaded_where(fleet: SimFleet, client: ollama.AsyncClient) -> None:
    await client.generate(model="qwen2.5:0.5b", prompt="x", stream=False)
    await client.generate(model="gemma3:4b", prompt="x", stream=False)
    running = (await client.ps()).models
    assert {m.model for m in running} >= {"qwen2.5:0.5b", "gemma3:4b"}
    assert all(m.expires_at is not None and m.size_vram for m in running)
    async with httpx.AsyncClient(base_url=fleet.url) as raw:
        where = {(m["model"], m["backend"]) for m in (await raw.get("/api/ps")).json()["models"]}
    assert ("qwen2.5:0.5b", "sim0") in where and ("gemma3:4b", "sim1") in where


async def test_show(client: ollama.AsyncClient) -> None:
    shown = await client.show("qwen2.5:0.5b")
    assert shown.details is not None and shown.details.family
    assert "completion" in (shown.capabilities or [])
    with pytest.raises(ollama.ResponseError) as err:
        await client.show("missing:1b")
    assert err.value.status_code == 404


async def test_unknown_model_raises_the_clients_404(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        await client.chat(model="nope:7b", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    assert 'model "nope:7b" not found' in err.value.error


async def test_version_root_and_headers(fleet: SimFleet) -> None:
    async with httpx.AsyncClient(base_url=fleet.url) as raw:
        root = await raw.get("/")
        head = await raw.head("/")
        version = await raw.get("/api/version")
        routed = await raw.post(
            "/api/generate", json={"model": "llama3.2:1b", "prompt": "x", "stream": False}
        )
    assert root.text == "Ollama is running" and head.status_code == 200
    assert version.json()["version"] and version.json()["corral"]
    assert version.headers["x-corral-backend"] == "sim0,sim1"
    assert routed.headers["x-corral-backend"] in {"sim0", "sim1"}
    assert routed.headers["x-corral-request-id"]
    assert routed.headers["x-corral-route-reason"].startswith("corral: ")


async def test_pull_streams_one_merged_progress(
    fleet: SimFleet, client: ollama.AsyncClient
) -> None:
    progress = [p async for p in await client.pull("mistral:7b", stream=True)]
    assert progress[-1].status == "success"
    layered = [p for p in progress if p.digest and p.total]
    assert layered, "per-layer progress expected"
    # Totals are summed over both backends: the last report of a layer covers both.
    last = {p.digest: p for p in layered}
    for p in last.values():
        assert p.completed == p.total
    for node in fleet.nodes:
        assert node.model.has_model("mistral:7b")
    assert "mistral:7b" in [m.model for m in (await client.list()).models]


async def test_pull_without_stream_answers_once(client: ollama.AsyncClient) -> None:
    result = await client.pull("qwen2.5:7b")
    assert result.status == "success"


async def test_a_push_failing_on_one_backend_names_it(fleet: SimFleet) -> None:
    # Only sim0 holds qwen2.5:0.5b, so sim1 answers 404 to the push.
    async with httpx.AsyncClient(base_url=fleet.url) as raw:
        whole = await raw.post("/api/push", json={"model": "qwen2.5:0.5b", "stream": False})
        streamed = await raw.post("/api/push", json={"model": "qwen2.5:0.5b"})
    assert whole.status_code == 500
    assert whole.json()["error"].startswith("failed on 1 of 2 backends: sim1:")
    last = streamed.text.splitlines()[-1]
    assert streamed.status_code == 200 and "failed on 1 of 2 backends: sim1" in last


async def test_x_corral_backend_header_targets_one_backend(
    fleet: SimFleet, make_client: Callable[..., ollama.AsyncClient]
) -> None:
    client = make_client(headers={"X-Corral-Backend": "sim1"})
    assert (await client.pull("phi3:mini")).status == "success"
    assert fleet.node("sim1").model.has_model("phi3:mini")
    assert not fleet.node("sim0").model.has_model("phi3:mini")
    bad = make_client(headers={"X-Corral-Backend": "nowhere"})
    with pytest.raises(ollama.ResponseError) as err:
        await bad.pull("phi3:mini")
    assert err.value.status_code == 404


async def test_copy_create_and_delete_fan_out(fleet: SimFleet, client: ollama.AsyncClient) -> None:
    await client.copy("llama3.2:1b", "mine:latest")
    assert all(n.model.has_model("mine:latest") for n in fleet.nodes)
    created = await client.create(model="tuned:1b", from_="llama3.2:1b", system="be brief")
    assert created.status == "success"
    assert all(n.model.has_model("tuned:1b") for n in fleet.nodes)
    await client.delete("mine")
    assert not any(n.model.has_model("mine:latest") for n in fleet.nodes)
    with pytest.raises(ollama.ResponseError) as err:
        await client.delete("mine")
    assert err.value.status_code == 404
    # Served right after: the gateway refreshed the lists when the fan-out ended.
    reply = await client.generate(model="tuned:1b", prompt="x")
    assert reply.done


async def test_create_and_push_stream_progress_through_the_client(
    client: ollama.AsyncClient,
) -> None:
    created = [p async for p in await client.create(model="t2", from_="llama3.2:1b", stream=True)]
    assert created[-1].status == "success" and len(created) > 1
    pushed = [p async for p in await client.push("t2", stream=True)]
    assert pushed[-1].status == "success"


async def test_copy_of_a_model_only_one_backend_holds(
    fleet: SimFleet, client: ollama.AsyncClient
) -> None:
    await client.copy("gemma3:4b", "g2:latest")
    assert fleet.node("sim1").model.has_model("g2:latest")


async def test_blobs_upload_to_every_backend(
    fleet: SimFleet, client: ollama.AsyncClient, tmp_path: Path
) -> None:
    blob = tmp_path / "adapter.bin"
    blob.write_bytes(b"weights" * 1000)
    digest = await client.create_blob(blob)
    assert digest == "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    async with httpx.AsyncClient(base_url=fleet.url) as raw:
        assert (await raw.head(f"/api/blobs/{digest}")).status_code == 200
        assert (await raw.head("/api/blobs/sha256:" + "0" * 64)).status_code == 404
        bad = await raw.post(f"/api/blobs/{digest}", content=b"other bytes")
    assert bad.status_code == 400 and "digest mismatch" in bad.json()["error"]
    for node in fleet.nodes:
        assert digest in node.runtime.blobs
