"""LangChain's ChatOllama and ChatOpenAI, as apps use them, through Corral."""

from __future__ import annotations

import httpx
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from corral.sim.launch import NodeSpec, start_node
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_launch import VllmSpec
from tests.helpers import FAST_SIM, run_gateway

QWEN = "Qwen/Qwen2.5-7B-Instruct"


async def test_langchain_chat_models_work_on_both_backend_kinds() -> None:
    node = await start_node(NodeSpec(models=("llama3.2:1b",), config=FAST_SIM))
    vllm = await start_node(VllmSpec(model=QWEN, config=VllmConfig(speed=200, jitter=0)))
    backends = [node.url, "openai+" + vllm.url]
    try:
        async with run_gateway(backends) as gw, httpx.AsyncClient() as http:
            for model in ("llama3.2:1b", QWEN):
                ollama_style = ChatOllama(model=model, base_url=gw.url, num_predict=5)
                try:
                    reply = await ollama_style.ainvoke("hello")
                finally:
                    await ollama_style._async_client.close()  # LangChain never closes it
                assert reply.content
                openai_style = ChatOpenAI(
                    model=model,
                    base_url=gw.url + "/v1",
                    api_key="unused",
                    max_tokens=5,
                    http_async_client=http,
                )
                reply = await openai_style.ainvoke("hello")
                assert reply.content
                assert reply.usage_metadata is not None
                assert reply.usage_metadata["output_tokens"] == 5
                pieces = [c.content async for c in openai_style.astream("hello")]
                assert "".join(str(p) for p in pieces)
    finally:
        await vllm.stop()
        await node.stop()
