"""Bad input gets the right status and an Ollama-shaped error, never a 500 or a hang."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.helpers import RunningGateway, free_port, run_gateway


@pytest.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    # One backend that is down: enough to check everything rejected before routing.
    async with run_gateway(
        [f"http://127.0.0.1:{free_port()}"], limits={"max_body_bytes": 1024}
    ) as running:
        yield running


async def post(gateway: RunningGateway, path: str, content: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
        return await client.post(path, content=content)


def assert_ollama_error(resp: httpx.Response, status: int, fragment: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert fragment in body["error"]
    assert resp.headers["x-corral-request-id"]


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/embed", "/api/show"])
async def test_malformed_json_is_a_400(gateway: RunningGateway, path: str) -> None:
    assert_ollama_error(await post(gateway, path, b'{"model": '), 400, "invalid JSON")


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/embed", "/api/embeddings"])
async def test_missing_model_is_a_400(gateway: RunningGateway, path: str) -> None:
    assert_ollama_error(await post(gateway, path, b'{"prompt": "hi"}'), 400, "model is required")


async def test_empty_body_is_a_400(gateway: RunningGateway) -> None:
    assert_ollama_error(await post(gateway, "/api/chat", b""), 400, "missing request body")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/generate", b'{"model": 7, "prompt": "x"}', "model"),
        ("/api/generate", b'{"model": "m", "stream": "yes"}', "stream"),
        ("/api/chat", b'{"model": "m", "messages": "hello"}', "messages"),
        ("/api/chat", b'{"model": "m", "messages": [{"content": "no role"}]}', "role"),
        ("/api/embed", b'{"model": "m", "input": 5}', "input"),
        ("/api/generate", b'{"model": "m", "options": []}', "options"),
    ],
)
async def test_wrong_types_are_a_400_naming_the_field(
    gateway: RunningGateway, path: str, body: bytes, field: str
) -> None:
    resp = await post(gateway, path, body)
    assert_ollama_error(resp, 400, field)


async def test_a_json_array_body_is_a_400(gateway: RunningGateway) -> None:
    assert_ollama_error(await post(gateway, "/api/chat", b"[1, 2]"), 400, "invalid request")


async def test_unknown_model_is_a_404_in_ollamas_words(gateway: RunningGateway) -> None:
    resp = await post(gateway, "/api/generate", b'{"model": "nope:1b", "prompt": "x"}')
    assert_ollama_error(resp, 404, 'model "nope:1b" not found, try pulling it first')
    # The name is quoted as the client wrote it, without the implied :latest.
    resp = await post(gateway, "/api/generate", b'{"model": "nope", "prompt": "x"}')
    assert_ollama_error(resp, 404, 'model "nope" not found')


async def test_oversized_body_is_a_413(gateway: RunningGateway) -> None:
    body = b'{"model": "m", "prompt": "' + b"x" * 2048 + b'"}'
    assert_ollama_error(await post(gateway, "/api/generate", body), 413, "exceeds 1024 bytes")


async def test_oversized_chunked_body_is_a_413(gateway: RunningGateway) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "m", "prompt": "'
        for _ in range(8):
            yield b"x" * 256
        yield b'"}'

    async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
        resp = await client.post("/api/generate", content=chunks())
    assert_ollama_error(resp, 413, "exceeds 1024 bytes")


async def test_unknown_path_is_a_404(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
        resp = await client.get("/api/nothing-here")
    assert resp.status_code == 404
    assert resp.json() == {"error": "no such endpoint: GET /api/nothing-here"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/generate"), ("POST", "/api/tags"), ("GET", "/api/delete"), ("POST", "/api/ps")],
)
async def test_wrong_method_is_a_405(gateway: RunningGateway, method: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
        resp = await client.request(method, path)
    assert resp.status_code == 405
    assert "not allowed" in resp.json()["error"]
    assert resp.headers["allow"]


async def test_a_model_whose_backends_are_all_down_is_a_503(gateway: RunningGateway) -> None:
    # Pretend the down backend held the model: the request must not hang or 500.
    gw = gateway.gw
    name = next(iter(gw.fleet.backends))
    gw.fleet.scheduler.set_models(name, {"m:latest"})
    resp = await post(gateway, "/api/generate", b'{"model": "m", "prompt": "x"}')
    assert_ollama_error(resp, 503, "(1 down)")
    assert resp.headers["retry-after"] == "2"
