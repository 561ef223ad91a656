"""Bad input at the inference endpoints, in front of simulated Ollama and vLLM backends:
what the generated requests of tests/app/test_fuzz_inference.py found, one behaviour
each. (tests/app/test_bad_input.py has the cases that need no backend.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from corral.sim.launch import NodeSpec, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig, VllmConfig
from corral.sim.vllm_launch import VllmSpec
from tests.helpers import run_gateway, until

QWEN = "Qwen/Qwen2.5-7B-Instruct"  # on the vLLM server: Ollama clients are translated
DEEP = b"[" * 5000 + b"]" * 5000  # valid JSON, nested past the parser's stack


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    instant = NodeConfig(zero_delay=True, jitter=0.0)
    nodes = await start_nodes(
        [
            NodeSpec(models=("llama3.2:1b", "nomic-embed-text"), config=instant, name="sim0"),
            VllmSpec(model=QWEN, config=VllmConfig(zero_delay=True, jitter=0.0), name="vllm0"),
        ]
    )
    backends = [
        {"name": "sim0", "url": nodes[0].url},
        {"name": "vllm0", "url": "openai+" + nodes[1].url},
    ]
    try:
        async with run_gateway(backends) as gw:
            await until(lambda: all(b.healthy for b in gw.gw.fleet.backends.values()))
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                yield http
    finally:
        await stop_nodes(nodes)


def ollama_error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return str(body["error"])


def openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error", error
    return error


async def test_a_clients_mistakes_do_not_trip_the_breaker_of_the_backend_that_saw_them(
    client: httpx.AsyncClient,
) -> None:
    # Refused in translation (Corral's words) and by the backend itself (vLLM's): the
    # backend did not fail, so five of them in a row must not take it from everyone.
    junk_option = {"model": QWEN, "prompt": "x", "stream": False, "options": {"num_predict": []}}
    not_embedder = {"model": QWEN, "input": "x"}
    for _ in range(6):
        text = ollama_error(await client.post("/api/generate", json=junk_option), 400)
        assert "options.num_predict" in text
        text = ollama_error(await client.post("/api/embed", json=not_embedder), 400)
        assert "does not support Embeddings" in text
    assert (await client.get("/admin/breakers")).json()["breakers"] == []
    ok = await client.post(
        "/api/generate",
        json={"model": QWEN, "prompt": "x", "stream": False, "options": {"num_predict": 4}},
    )
    assert ok.status_code == 200, ok.text


async def test_a_backends_refusal_of_a_translated_request_is_a_request_error(
    client: httpx.AsyncClient,
) -> None:
    # OpenAI's clients tell a request error from a server error by the type.
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "llama3.2:1b", "messages": [{"role": "user", "content": "x"}],
              "max_tokens": 2**64},
    )  # fmt: skip
    error = openai_error(resp, 400)
    assert "num_predict" in error["message"] and error["code"] == "BadRequest"


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/api/generate", "llama3.2:1b"),
        ("/api/generate", QWEN),
        ("/api/chat", "llama3.2:1b"),
        ("/api/embed", "nomic-embed-text"),
        ("/api/embeddings", "nomic-embed-text"),
        ("/api/show", "llama3.2:1b"),
        ("/api/copy", "llama3.2:1b"),
        ("/v1/chat/completions", "llama3.2:1b"),
        ("/v1/completions", QWEN),
        ("/v1/embeddings", "nomic-embed-text"),
    ],
)
async def test_json_nested_past_the_stack_is_a_400_in_the_endpoints_dialect(
    client: httpx.AsyncClient, path: str, model: str
) -> None:
    body = b'{"model": "' + model.encode() + b'", "future_field": ' + DEEP + b"}"
    resp = await client.post(path, content=body)
    if path.startswith("/api/"):
        assert ollama_error(resp, 400) == "invalid JSON in request body: nested too deeply"
    else:
        error = openai_error(resp, 400)
        assert error["message"] == "invalid JSON in request body: nested too deeply"


async def test_tool_arguments_nested_past_the_stack_are_refused_naming_them(
    client: httpx.AsyncClient,
) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"city": ' + DEEP.decode() + "}"},
    }
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    resp = await client.post(
        "/v1/chat/completions", json={"model": "llama3.2:1b", "messages": messages}
    )
    error = openai_error(resp, 400)
    assert error["param"] == "messages[1].tool_calls[0].function.arguments"


@pytest.mark.parametrize("model", ["llama3.2:1b", QWEN])
@pytest.mark.parametrize(
    "schema", [{"$ref": "#"}, {"$ref": "#/nowhere"}, {"$ref": "http://127.0.0.1:9/s.json"}]
)
async def test_a_format_schema_whose_ref_goes_nowhere_is_a_400(
    client: httpx.AsyncClient, model: str, schema: dict[str, Any]
) -> None:
    messages = [{"role": "user", "content": "x"}]
    resp = await client.post(
        "/api/chat", json={"model": model, "messages": messages, "format": schema}
    )
    assert ollama_error(resp, 400).startswith("format is not a valid JSON schema: its $ref")
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": messages, "response_format": fmt},
    )
    assert openai_error(resp, 400)["param"] == "response_format"


@pytest.mark.parametrize("model", ["llama3.2:1b", QWEN])
async def test_a_keep_alive_that_is_not_a_duration_is_refused_naming_it(
    client: httpx.AsyncClient, model: str
) -> None:
    # Before: Ollama's "time: missing unit in duration", or dropped unseen on vLLM.
    body = {"model": model, "prompt": "x", "stream": False, "keep_alive": "-1"}
    text = ollama_error(await client.post("/api/generate", json=body), 400)
    assert text.startswith("keep_alive '-1' is not a duration")
    body["keep_alive"] = "-1m"  # a Go duration: forever
    body["options"] = {"num_predict": 2}
    resp = await client.post("/api/generate", content=json.dumps(body))
    assert resp.status_code == 200, resp.text


async def test_a_create_every_backend_refuses_answers_their_4xx_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    # Neither from nor files: Ollama's own 400, not a failure of the gateway's.
    resp = await client.post("/api/create", json={"model": "mine", "stream": False})
    assert "neither 'from' or 'files' was specified" in ollama_error(resp, 400)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"model": "m", "stream": "yes"}, "stream must be true or false"),
        ({"model": "m", "insecure": 1}, "insecure must be true or false"),
        ({"model": 5}, "model must be a string"),
    ],
)
async def test_model_management_fields_keep_their_json_types(
    client: httpx.AsyncClient, body: dict[str, Any], said: str
) -> None:
    # As on /api/generate: "yes" is not a boolean; a pull must not start on it.
    assert ollama_error(await client.post("/api/pull", json=body), 400) == said
