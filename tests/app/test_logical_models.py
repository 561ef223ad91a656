"""One logical model over an Ollama node and a vLLM server, asked for by any alias."""

from __future__ import annotations

import httpx
import openai

from corral.sim.launch import NodeSpec, start_node
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_launch import VllmSpec
from tests.helpers import FAST_SIM, run_gateway

QWEN_VLLM = "Qwen/Qwen2.5-7B-Instruct"


async def test_an_alias_routes_across_both_kinds_with_the_name_rewritten() -> None:
    ollama_node = await start_node(
        NodeSpec(models=("qwen2.5:7b", "llama3.2:1b"), config=FAST_SIM, name="o")
    )
    vllm = await start_node(VllmSpec(model=QWEN_VLLM, config=VllmConfig(speed=200, jitter=0)))
    backends = [
        {"name": "o", "url": ollama_node.url},
        {"name": "v", "url": "openai+" + vllm.url},
    ]
    models = [
        {
            "name": "qwen2.5:7b",
            "aliases": ["qwen"],
            "backends": [{"backend": "v", "upstream_name": QWEN_VLLM}],
        }
    ]
    try:
        # round_robin: every request alternates kinds (corral would stay where it is warm).
        async with run_gateway(
            backends, models=models, list_unmapped=False, policy="round_robin"
        ) as gw:
            oa = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            try:
                served = set()
                for _ in range(6):
                    raw = await oa.chat.completions.with_raw_response.create(
                        model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=3
                    )
                    served.add(raw.headers["x-corral-backend"])
                    assert raw.parse().model == "qwen"  # the name the client used
                assert served == {"o", "v"}
                listed = [m.id for m in (await oa.models.list()).data]
                assert listed == ["qwen2.5:7b"]  # unmapped llama3.2:1b is hidden
            finally:
                await oa.close()
            async with httpx.AsyncClient(base_url=gw.url) as raw_client:
                tags = (await raw_client.get("/api/tags")).json()["models"]
                assert [t["name"] for t in tags] == ["qwen2.5:7b"]
                # Hidden from the lists, but still served.
                resp = await raw_client.post(
                    "/api/generate", json={"model": "llama3.2:1b", "prompt": "x", "stream": False}
                )
                assert resp.status_code == 200
    finally:
        await vllm.stop()
        await ollama_node.stop()
