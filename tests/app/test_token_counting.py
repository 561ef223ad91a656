"""Answers that come without token counts are counted by the backend's own tokenizer
after the client has its answer, and the one usage record (and row) says so.

Over real sockets: the simulated vLLM server (its ``no_usage`` fault: an engine that
omits usage), a real llama.cpp engine, and an OpenAI-compatible server with no
tokenizer at all.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from aiohttp import web
from sqlalchemy import select

from corral.adapters.store.schema import UsageRow
from corral.adapters.tokenizer import Prompt
from corral.core.usage import UsageRecord
from corral.engines.llamacpp import start_llamacpp_async
from corral.engines.tinymodel import cached_tiny_model
from corral.sim.faults import Faults
from corral.sim.launch import start_node
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_launch import VllmNode, VllmSpec
from tests.helpers import RunningGateway, free_port, run_gateway, until

QWEN = "Qwen/Qwen2.5-7B-Instruct"
MSGS = [
    {"role": "system", "content": "You answer in one short paragraph."},
    {"role": "user", "content": "Tell me about counting tokens, please."},
]


@pytest.fixture
async def vllm() -> AsyncIterator[VllmNode]:
    node = await start_node(
        VllmSpec(model=QWEN, config=VllmConfig(speed=200, jitter=0), faults=Faults(no_usage=True))
    )
    try:
        yield node
    finally:
        await node.stop()


async def _tokenize(url: str, payload: dict[str, object]) -> int:
    async with httpx.AsyncClient(base_url=url) as client:
        resp = await client.post("/tokenize", json=payload)
    assert resp.status_code == 200
    count = resp.json()["count"]
    assert isinstance(count, int)
    return count


async def _tokenized(gw: RunningGateway) -> UsageRecord:
    rec = gw.gw.usage[-1]
    await until(lambda: rec.usage_source == "tokenized")
    return rec


async def test_a_vllm_stream_without_usage_is_counted_by_its_tokenizer(vllm: VllmNode) -> None:
    async with run_gateway(["openai+" + vllm.url]) as gw:
        oa = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        stream = await oa.chat.completions.create(
            model=QWEN,
            messages=MSGS,  # type: ignore[arg-type]
            max_tokens=12,
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await oa.close()
        rec = await _tokenized(gw)
        assert not rec.usage_estimated
        # The chat template applied, as vLLM counts the chat's own prompt.
        assert rec.prompt_tokens == await _tokenize(vllm.url, {"model": QWEN, "messages": MSGS})
        assert rec.completion_tokens == await _tokenize(
            vllm.url, {"model": QWEN, "prompt": text, "add_special_tokens": False}
        )
        assert rec.prompt_tokens != sum(len(m["content"]) for m in MSGS) // 4  # not the guess


async def test_a_whole_answer_without_usage_is_counted_too(vllm: VllmNode) -> None:
    async with run_gateway(["openai+" + vllm.url]) as gw, httpx.AsyncClient() as client:
        resp = await client.post(
            gw.url + "/v1/chat/completions",
            json={"model": QWEN, "messages": MSGS, "max_tokens": 9},
        )
        assert resp.status_code == 200
        assert "usage" not in resp.json() or resp.json()["usage"] is None
        text = resp.json()["choices"][0]["message"]["content"]
        rec = await _tokenized(gw)
        assert rec.prompt_tokens == await _tokenize(vllm.url, {"model": QWEN, "messages": MSGS})
        assert rec.completion_tokens == await _tokenize(
            vllm.url, {"model": QWEN, "prompt": text, "add_special_tokens": False}
        )


async def test_a_translated_stream_without_usage_is_counted_too(vllm: VllmNode) -> None:
    async with run_gateway(["openai+" + vllm.url]) as gw:
        async with ollama.AsyncClient(host=gw.url) as oc:
            parts = [p async for p in await oc.chat(model=QWEN, messages=MSGS, stream=True)]
        assert parts[-1].done
        rec = await _tokenized(gw)
        assert rec.prompt_tokens == await _tokenize(vllm.url, {"model": QWEN, "messages": MSGS})
        text = "".join(p.message.content or "" for p in parts)
        assert rec.completion_tokens == await _tokenize(
            vllm.url, {"model": QWEN, "prompt": text, "add_special_tokens": False}
        )


async def test_a_stream_the_client_leaves_is_counted_from_what_was_relayed() -> None:
    slow = VllmConfig(speed=2, jitter=0)  # ~280 tokens/s: the client leaves mid-answer
    node = await start_node(VllmSpec(model=QWEN, config=slow))
    try:
        async with run_gateway(["openai+" + node.url]) as gw, httpx.AsyncClient() as client:
            body = {"model": QWEN, "messages": MSGS, "max_tokens": 400, "stream": True}
            async with client.stream("POST", gw.url + "/v1/chat/completions", json=body) as r:
                seen = 0
                async for line in r.aiter_lines():
                    seen += line.startswith("data:")
                    if seen == 6:
                        break
            await until(lambda: bool(gw.gw.usage) and gw.gw.usage[-1].client_gone)
            rec = await _tokenized(gw)
            assert rec.prompt_tokens == await _tokenize(node.url, {"model": QWEN, "messages": MSGS})
            assert rec.completion_tokens is not None and 0 < rec.completion_tokens < 400
    finally:
        await node.stop()


async def test_the_ledger_row_is_amended_not_added(vllm: VllmNode, tmp_path: Path) -> None:
    async with run_gateway(["openai+" + vllm.url], data_dir=str(tmp_path)) as gw:
        async with httpx.AsyncClient() as client:
            resp = await client.post(
                gw.url + "/v1/chat/completions",
                json={"model": QWEN, "messages": MSGS, "max_tokens": 5},
                headers={"X-Request-Id": "counted-once"},
            )
        assert resp.status_code == 200
        rec = await _tokenized(gw)
        ledger = gw.gw.ledger
        assert ledger is not None
        await ledger.drain()
        store = gw.gw.store
        assert store is not None
        async with store.read() as session:
            rows = (
                await session.scalars(select(UsageRow).where(UsageRow.request_id == "counted-once"))
            ).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.tokens_source == "tokenized" and not row.tokens_estimated
    assert (row.prompt_tokens, row.completion_tokens) == (
        rec.prompt_tokens,
        rec.completion_tokens,
    )


# -- a server without a tokenizer ---------------------------------------------------


@pytest.fixture
async def bare() -> AsyncIterator[tuple[str, list[str]]]:
    """An OpenAI-compatible server that reports no usage and has no /tokenize."""
    asked: list[str] = []

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bare", "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        message = {"role": "assistant", "content": "one two three four"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response({"id": "x", "object": "chat.completion", "choices": [choice]})

    @web.middleware
    async def log(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        asked.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[log])
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"openai+http://127.0.0.1:{port}", asked
    finally:
        await runner.cleanup()


async def test_a_backend_without_a_tokenizer_keeps_the_estimate_and_is_asked_once(
    bare: tuple[str, list[str]],
) -> None:
    url, asked = bare
    async with run_gateway([url]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        counter = gw.gw.counter
        for n in range(3):
            resp = await client.post(
                "/v1/chat/completions", json={"model": "bare", "messages": MSGS}
            )
            assert resp.status_code == 200
            await until(lambda: gw.gw.requests_total == n + 1 and not counter.busy)  # noqa: B023
            if n == 0:  # the first answer taught Corral there is no tokenizer there
                backend = gw.gw.usage[-1].backend or ""
                assert counter.tokenizers.flavour(backend) == "none"
        rec = gw.gw.usage[-1]
        assert rec.usage_source == "estimated" and rec.usage_estimated
        assert rec.prompt_tokens == sum(len(m["content"]) for m in MSGS) // 4
        assert counter.counted == 0
    assert asked.count("/tokenize") == 1


async def test_tokenizing_can_be_turned_off(vllm: VllmNode) -> None:
    async with (
        run_gateway(["openai+" + vllm.url], usage={"tokenize": False}) as gw,
        httpx.AsyncClient() as client,
    ):
        resp = await client.post(
            gw.url + "/v1/chat/completions", json={"model": QWEN, "messages": MSGS}
        )
        assert resp.status_code == 200
        rec = gw.gw.usage[-1]
        assert rec.usage_source == "estimated"
        assert not gw.gw.counter.busy and gw.gw.counter.counted == 0


# -- the real llama.cpp engine ------------------------------------------------------


async def test_llamacpp_is_asked_its_own_way_and_counts_like_its_usage(tmp_path: Path) -> None:
    engine = await start_llamacpp_async(cached_tiny_model(tmp_path), alias="tiny-llama")
    try:
        async with run_gateway(["openai+" + engine.url]) as gw, httpx.AsyncClient() as client:
            body = {"model": "tiny-llama", "messages": MSGS, "max_tokens": 6}
            reported = (await client.post(gw.url + "/v1/chat/completions", json=body)).json()
            rec = gw.gw.usage[-1]
            assert rec.usage_source == "reported"
            # The same chat counted by the tokenizer, as if the engine had said nothing.
            counter = gw.gw.counter
            transport = gw.gw.fleet.transports[rec.backend or ""]
            text = reported["choices"][0]["message"]["content"]
            counts = await counter.tokenizers.count(
                rec.backend or "",
                transport,
                "tiny-llama",
                Prompt(messages=MSGS),
                text,
            )
            assert counter.tokenizers.flavour(rec.backend or "") == "llamacpp"
            assert counts is not None
            assert counts[0] == reported["usage"]["prompt_tokens"]
            async with httpx.AsyncClient(base_url=engine.url) as direct:
                ids = (await direct.post("/tokenize", json={"content": text})).json()["tokens"]
            assert counts[1] == len(ids)
    finally:
        await engine.astop()


async def test_a_llamacpp_stream_cut_short_is_counted_by_llamacpp(tmp_path: Path) -> None:
    engine = await start_llamacpp_async(cached_tiny_model(tmp_path), alias="tiny-llama")
    try:
        async with run_gateway(["openai+" + engine.url]) as gw, httpx.AsyncClient() as client:
            body = {"model": "tiny-llama", "messages": MSGS, "max_tokens": 6}
            whole = (await client.post(gw.url + "/v1/chat/completions", json=body)).json()
            body = {"model": "tiny-llama", "messages": MSGS, "max_tokens": 400, "stream": True}
            # 400 tokens take the engine ~150 ms; the client leaves after the first. On a
            # loaded machine the engine may still finish first (then it reported its
            # counts): a few tries make a cut-short stream certain.
            for _ in range(3):
                done = gw.gw.requests_total
                async with client.stream("POST", gw.url + "/v1/chat/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data:") and json.loads(line[5:]).get("choices"):
                            break  # the first token: leave
                await until(lambda: gw.gw.requests_total > done)  # noqa: B023
                if gw.gw.usage[-1].client_gone:
                    break
            rec = await _tokenized(gw)
            assert rec.client_gone
            assert rec.prompt_tokens == whole["usage"]["prompt_tokens"]
            assert rec.completion_tokens is not None and 0 < rec.completion_tokens < 400
    finally:
        await engine.astop()
