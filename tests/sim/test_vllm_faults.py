"""The simulated vLLM server's /metrics, error shapes, faults and disconnects."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral.sim.launch import VllmNode
from corral.sim.vllm_wire import ENGINE_DEAD
from tests.sim.conftest import StartVllm
from tests.sim.support import FAST_VLLM, VLLM_MODEL, until

HELLO = [{"role": "user", "content": "Tell me about llamas."}]
CHAT = {"model": VLLM_MODEL, "messages": HELLO}


def client(node: VllmNode) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0)


async def metrics(http: httpx.AsyncClient) -> dict[str, float]:
    """Sample name (with finished_reason / le where present) -> value."""
    resp = await http.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            assert s.labels["model_name"] == VLLM_MODEL and s.labels["engine"] == "0"
            extra = s.labels.get("finished_reason") or s.labels.get("le")
            out[s.name + (f"[{extra}]" if extra else "")] = s.value
    return out


async def error(http: httpx.AsyncClient, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    r = await http.post(path, **kw)
    return r.status_code, r.json()


async def test_metrics_expose_vllm_names_and_the_counters_move(vllm: VllmNode) -> None:
    system = {"role": "system", "content": "You are a careful assistant. " * 40}
    async with httpx.AsyncClient(base_url=vllm.url) as http, client(vllm) as c:
        before = await metrics(http)
        for question in ("What is a llama?", "What is an alpaca?"):
            await c.chat.completions.create(
                model=VLLM_MODEL,
                messages=[system, {"role": "user", "content": question}],
                max_tokens=8,
            )
        after = await metrics(http)
        families = {
            f.name: f.type
            for f in text_string_to_metric_families((await http.get("/metrics")).text)
        }
    assert families["vllm:num_requests_running"] == "gauge"
    assert families["vllm:kv_cache_usage_perc"] == "gauge"
    assert families["vllm:prefix_cache_queries"] == "counter"
    assert families["vllm:time_to_first_token_seconds"] == "histogram"
    assert before["vllm:prefix_cache_queries_total"] == 0
    assert after["vllm:prefix_cache_queries_total"] > 2 * 300
    # The shared system prompt hits on the second request, in whole 16-token blocks.
    hits = after["vllm:prefix_cache_hits_total"]
    assert hits > 250 and hits % 16 == 0
    assert after["vllm:generation_tokens_total"] == 16
    assert after["vllm:prompt_tokens_total"] == after["vllm:prefix_cache_queries_total"]
    assert after["vllm:time_to_first_token_seconds_count"] == 2
    assert after["vllm:time_to_first_token_seconds_bucket[+Inf]"] == 2
    assert after["vllm:request_success_total[length]"] == 2
    assert after["vllm:num_preemptions_total"] == 0
    assert after["vllm:num_requests_running"] == after["vllm:kv_cache_usage_perc"] == 0


async def test_running_and_waiting_gauges_follow_max_num_seqs(start_vllm: StartVllm) -> None:
    node = await start_vllm(config=replace(FAST_VLLM, max_num_seqs=1, speed=1.0))
    async with httpx.AsyncClient(base_url=node.url) as http, client(node) as c:
        tasks = [
            asyncio.create_task(
                c.chat.completions.create(model=VLLM_MODEL, messages=HELLO, max_tokens=400)
            )
            for _ in range(2)
        ]
        await until(lambda: node.model.num_waiting == 1)
        m = await metrics(http)
        state = (await http.get("/_sim/state")).json()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert m["vllm:num_requests_running"] == 1 and m["vllm:num_requests_waiting"] == 1
    assert 0 < m["vllm:kv_cache_usage_perc"] < 1
    assert state["running"] == 1 and state["waiting"] == 1 and state["kv_cache"]["usage"] > 0


async def test_errors_have_vllm_shape(vllm: VllmNode) -> None:
    async with httpx.AsyncClient(base_url=vllm.url) as http:
        status, body = await error(http, "/v1/chat/completions", json={**CHAT, "model": "gpt-4"})
        assert (status, body) == (
            404,
            {
                "error": {
                    "message": "The model `gpt-4` does not exist.",
                    "type": "NotFoundError",
                    "param": "model",
                    "code": 404,
                }
            },
        )
        status, body = await error(http, "/v1/chat/completions", content=b"{not json")
        assert status == 400 and body["error"]["type"] == "Bad Request"
        assert "json_invalid" in body["error"]["message"] and body["error"]["code"] == 400
        status, body = await error(http, "/v1/chat/completions", json={"model": VLLM_MODEL})
        assert status == 400 and "'messages'" in body["error"]["message"]
        assert "Field required" in body["error"]["message"]
        status, body = await error(http, "/v1/chat/completions", json={**CHAT, "max_tokens": "x"})
        assert status == 400 and "valid integer" in body["error"]["message"]
        status, body = await error(http, "/v1/chat/completions", json={**CHAT, "n": 2})
        assert status == 400 and body["error"]["param"] == "n"
        status, body = await error(
            http, "/v1/completions", json={"prompt": "x", "stream_options": {"include_usage": True}}
        )
        assert status == 400 and "stream=True" in body["error"]["message"]
        r = await http.get("/v1/nothing")
        assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})


async def test_prompt_longer_than_max_model_len_is_a_400_with_vllm_wording(
    start_vllm: StartVllm,
) -> None:
    node = await start_vllm(config=replace(FAST_VLLM, max_model_len=100))
    long_prompt = "word " * 200
    async with client(node) as c:
        with pytest.raises(openai.BadRequestError) as exc:
            await c.completions.create(model=VLLM_MODEL, prompt=long_prompt)
        body = exc.value.body
        assert isinstance(body, dict) and body["param"] == "input_tokens"
        assert body["message"].startswith(
            "This model's maximum context length is 100 tokens. However, your request has 250"
            " input tokens."
        )
        with pytest.raises(openai.BadRequestError) as exc:
            await c.completions.create(model=VLLM_MODEL, prompt="short", max_tokens=200)
        body = exc.value.body
        assert isinstance(body, dict) and body["param"] == "max_tokens"
        assert "'max_tokens' or 'max_completion_tokens' is too large: 200." in body["message"]


async def test_busy_and_error_rate_faults_flip_through_the_control_endpoint(
    vllm: VllmNode,
) -> None:
    async with httpx.AsyncClient(base_url=vllm.url) as http:
        faults = (await http.post("/_sim/faults", json={"busy": True})).json()
        assert faults["busy"] is True
        status, body = await error(http, "/v1/chat/completions", json=CHAT)
        assert status == 503 and body["error"]["code"] == 503
        await http.post("/_sim/faults", json={"busy": False, "error_rate": 1.0})
        status, body = await error(http, "/v1/completions", json={"prompt": "x"})
        assert (status, body["error"]["message"]) == (500, ENGINE_DEAD)
        bad = await http.post("/_sim/faults", json={"nope": 1})
        assert bad.status_code == 400
        errors = (await http.get("/_sim/state")).json()["counters"]["errors"]
        assert errors == {"busy": 1, "error_rate": 1}
        state = (await http.post("/_sim/reset")).json()
        assert state["faults"]["error_rate"] == 0 and state["counters"]["errors"] == {}
        assert (await http.post("/v1/completions", json={"prompt": "x"})).status_code == 200


async def test_error_mid_stream_is_an_sse_error_event_then_done(vllm: VllmNode) -> None:
    vllm.set_faults(error_mid_stream=1.0, after_chunks=3)
    async with client(vllm) as c:
        stream = await c.chat.completions.create(model=VLLM_MODEL, messages=HELLO, stream=True)
        got = []
        with pytest.raises(openai.APIError, match="EngineCore"):
            async for chunk in stream:
                got.append(chunk)
    assert len(got) == 3
    assert vllm.state()["counters"]["errors"] == {"error_mid_stream": 1}


async def test_drop_mid_stream_and_malformed_json_break_the_stream(vllm: VllmNode) -> None:
    body = {**CHAT, "stream": True}
    async with httpx.AsyncClient(base_url=vllm.url) as http:
        vllm.set_faults(drop_mid_stream=1.0)
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
                await resp.aread()
        vllm.set_faults(drop_mid_stream=0.0, malformed_json=1.0)
        async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            raw = (await resp.aread()).decode()
        assert raw.endswith("data: [DONE]\n\n")
        events = raw.split("\n\n")
        assert any(e.startswith("data: {") and not e.endswith("}") for e in events)
    await until(lambda: vllm.model.in_flight == 0)


async def test_hang_swallows_requests_but_not_the_control_endpoint(vllm: VllmNode) -> None:
    vllm.set_faults(hang=True)
    async with httpx.AsyncClient(base_url=vllm.url, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/health")
        assert (await http.get("/_sim/state")).json()["counters"]["errors"] == {"hang": 1}


async def test_client_disconnect_aborts_the_sequence_and_is_counted(
    start_vllm: StartVllm,
) -> None:
    node = await start_vllm(config=replace(FAST_VLLM, speed=2.0))
    body = {**CHAT, "stream": True, "max_tokens": 2000}
    async with httpx.AsyncClient(base_url=node.url) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            lines = resp.aiter_lines()
            while not (await anext(lines)).startswith("data: {"):
                pass
            assert node.model.num_running == 1
        await until(lambda: node.state()["counters"]["cancelled"] == 1)
        state = (await http.get("/_sim/state")).json()
        m = await metrics(http)
    assert state["engine"]["cancelled"] == 1 and state["running"] == 0
    assert state["kv_cache"]["usage"] == 0
    assert m["vllm:request_success_total[abort]"] == 1
