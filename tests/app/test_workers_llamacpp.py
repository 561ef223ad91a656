"""Workers that are real llama.cpp servers (kind openai), serving the tiny model."""

from __future__ import annotations

from pathlib import Path

import ollama
import openai
import pytest

from corral.engines.tinymodel import write_tiny_model
from tests.app.workers_support import gone, workers_gateway
from tests.helpers import until

ALIAS = "tiny-llama"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf")


def llamacpp(model: Path, alias: str = ALIAS) -> str:
    return f"{{python}} -m corral.engines.llamacpp --model {model} --port {{port}} --alias {alias}"


async def test_llamacpp_workers_serve_both_dialects_through_the_gateway(model: Path) -> None:
    async with workers_gateway(
        command=llamacpp(model), kind="openai", models=[ALIAS], autoscale=False
    ) as wg:
        resp = await wg.client.post("/admin/workers/spawn", json={"count": 2})
        assert resp.status_code == 201, resp.text
        workers = resp.json()["workers"]
        assert [(w["state"], w["kind"], w["models"]) for w in workers] == [
            ("ready", "openai", ["tiny-llama:latest"])
        ] * 2
        ids = {w["id"] for w in workers}
        for w in workers:
            assert wg.running.gw.fleet.backends[w["id"]].kind == "openai"
        async with openai.AsyncOpenAI(
            base_url=wg.running.url + "/v1", api_key="unused", max_retries=0
        ) as oa:
            raw = await oa.chat.completions.with_raw_response.create(
                model=ALIAS, messages=[{"role": "user", "content": "hello"}], max_tokens=4
            )
            answer = raw.parse()
            assert raw.headers["x-corral-backend"] in ids
            assert answer.usage is not None and answer.usage.completion_tokens == 4
            stream = await oa.chat.completions.create(
                model=ALIAS,
                messages=[{"role": "user", "content": "hello"}],
                max_tokens=5,
                stream=True,
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text
        # An Ollama client, translated to the llama.cpp worker and back.
        async with ollama.AsyncClient(host=wg.running.url) as ol:
            reply = await ol.chat(
                model=ALIAS,
                messages=[{"role": "user", "content": "hi"}],
                options={"num_predict": 3},
            )
        assert reply.message.content and reply.eval_count == 3


async def test_a_llamacpp_worker_without_the_required_model_is_refused(model: Path) -> None:
    command = llamacpp(model, alias="other-model")
    async with workers_gateway(
        command=command, kind="openai", models=[ALIAS], autoscale=False
    ) as wg:
        resp = await wg.client.post("/admin/workers/spawn", json={})
        assert resp.status_code == 502
        message = resp.json()["error"]["message"]
        assert "the engine serves other-model:latest, not tiny-llama" in message
        assert "cannot pull models" in message
        (failed,) = wg.pool.ended
        assert failed.state == "failed"
        assert gone(failed.handle.pid if failed.handle else None)
        assert wg.running.gw.fleet.backends == {}


async def test_a_llamacpp_worker_is_pruned_when_idle(model: Path) -> None:
    async with workers_gateway(
        command=llamacpp(model), kind="openai", min=0, idle_s=0.3, cooldown_s=0.0
    ) as wg:
        await wg.client.post("/admin/workers/spawn", json={"count": 1})
        (worker,) = wg.ready()
        resp = await wg.client.post(
            "/v1/chat/completions",
            json={"model": ALIAS, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
        )
        assert resp.status_code == 200
        # Idle for idle_s after its request: the autoscaler prunes it (min is 0).
        await until(lambda: worker.state == "stopped", timeout=10)
        assert worker.served == 1
        assert wg.pool.events[0].removed == (worker.id,)
