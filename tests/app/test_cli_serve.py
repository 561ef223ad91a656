"""``corral serve`` and ``corral sim`` as real processes, used by the sync ``ollama`` client."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.helpers import free_port


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    # Each gateway keeps its database and secret in a directory of its own.
    data_dir = tempfile.mkdtemp(prefix="corral-serve-")
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    clean["CORRAL_DATA_DIR"] = data_dir
    return subprocess.Popen(
        [sys.executable, "-m", "corral", *args],
        env={**clean, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}:\n{stop(proc)}")
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready in {timeout}s")


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is None:
        return ""
    with proc.stdout:
        return proc.stdout.read()


@pytest.fixture(scope="module")
def sims() -> Iterator[list[str]]:
    # Port 0: each node takes a free port and prints its URL, so nothing can race for it.
    proc = spawn(
        "sim", "--nodes", "2", "--port", "0", "--speed", "100",
        "--models", "llama3.2:1b,nomic-embed-text",
    )  # fmt: skip
    urls = read_urls(proc, 2)
    for url in urls:
        wait_ready(url, proc, timeout=15)
    yield urls
    stop(proc)


def read_urls(proc: subprocess.Popen[str], count: int) -> list[str]:
    """The node URLs ``corral sim`` prints, one line each, as it starts them.

    A process that dies ends the read (EOF); one that hangs is ended by the test timeout.
    """
    assert proc.stdout is not None
    urls: list[str] = []
    while len(urls) < count:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"corral sim printed {urls} only:\n{stop(proc)}")
        if line.startswith("corral sim:"):
            urls.append(line.split()[3])
    return urls


@pytest.fixture
def gateway(sims: list[str]) -> Iterator[str]:
    port = free_port()
    proc = spawn("serve", "--port", str(port), env={"CORRAL_BACKENDS": ",".join(sims)})
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    yield url
    stop(proc)


@pytest.fixture
def client(gateway: str) -> Iterator[ollama.Client]:
    client = ollama.Client(host=gateway)
    yield client
    client.close()


def test_the_sync_ollama_client_works_through_corral(client: ollama.Client) -> None:
    names = sorted(m.model for m in client.list().models)
    assert names == ["llama3.2:1b", "nomic-embed-text:latest"]
    reply = client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content and reply.done
    parts = list(client.generate(model="llama3.2:1b", prompt="hi", stream=True))
    assert parts[-1].done and len(parts) > 1
    assert len(client.embed(model="nomic-embed-text", input="x").embeddings) == 1
    assert client.show("llama3.2:1b").details is not None
    assert client.pull("llama3.2:3b").status == "success"
    assert "llama3.2:3b" in [m.model for m in client.list().models]
    client.delete("llama3.2:3b")
    assert client.ps().models


def test_backends_from_flags_and_from_the_seed_env_names(sims: list[str]) -> None:
    port = free_port()
    proc = spawn("serve", "--port", str(port), "--backend", sims[0], "--backend", sims[1])
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        tags = httpx.get(f"http://127.0.0.1:{port}/api/tags")
        assert tags.headers["x-corral-backend"] == ",".join(u.removeprefix("http://") for u in sims)
    finally:
        stop(proc)
    port = free_port()
    proc = spawn(
        "serve", env={"BACKENDS": sims[0], "PORT": str(port), "SELECTION_POLICY": "round_robin"}
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        resp = httpx.post(
            f"http://127.0.0.1:{port}/api/generate",
            json={"model": "llama3.2:1b", "prompt": "x", "stream": False},
        )
        assert resp.status_code == 200
        assert "round_robin" in resp.headers["x-corral-route-reason"]
    finally:
        stop(proc)


def test_a_config_file_and_env_overriding_it(sims: list[str], tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "corral.yaml"
    cfg.write_text(
        f"port: 1\nbackends:\n  - name: first\n    url: {sims[0]}\n    max_concurrency: 2\n"
    )
    proc = spawn("serve", "--config", str(cfg), env={"CORRAL_PORT": str(port)})
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        resp = httpx.post(
            f"http://127.0.0.1:{port}/api/generate",
            json={"model": "llama3.2:1b", "prompt": "x", "stream": False},
        )
        assert resp.headers["x-corral-backend"] == "first"
    finally:
        stop(proc)


def test_invalid_config_fails_at_start_naming_key_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "corral.yaml"
    cfg.write_text("port: 8088\ntimeouts:\n  connect_s: -1\n  first_byte: 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "corral", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
    )
    assert result.returncode == 2
    assert "corral.yaml:3: timeouts.connect_s" in result.stderr
    assert "corral.yaml:4: timeouts.first_byte" in result.stderr


def test_an_unreachable_backend_at_start_is_marked_down_not_fatal() -> None:
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    proc = spawn("serve", "--port", str(port), "--backend", dead)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/api/tags").json() == {"models": []}
    finally:
        out = stop(proc)
    assert "down" in out


def test_demo_serves_a_simulated_fleet() -> None:
    port = free_port()
    proc = spawn("serve", "--demo", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        client = ollama.Client(host=url)
        try:
            names = {m.model for m in client.list().models}
            assert {"llama3.2:1b", "qwen2.5:7b", "nomic-embed-text:latest"} <= names
            # A simulated vLLM server and a real llama.cpp engine, reached in Ollama's dialect.
            assert {"Qwen/Qwen2.5-7B-Instruct", "tiny-llama"} <= names
            real = client.chat(
                model="tiny-llama",
                messages=[{"role": "user", "content": "hi"}],
                options={"num_predict": 5},
            )
            assert real.done and real.eval_count == 5
            reply = client.generate(model="llama3.2:1b", prompt="hi", options={"num_predict": 3})
            assert reply.done and reply.eval_count == 3
            assert {m.model for m in client.ps().models} >= {"llama3.2:1b"}
        finally:
            client.close()
    finally:
        stop(proc)


def test_the_sync_openai_client_works_through_corral(gateway: str) -> None:
    import openai

    with openai.OpenAI(base_url=gateway + "/v1", api_key="unused", max_retries=0) as client:
        assert "llama3.2:1b" in {m.id for m in client.models.list().data}
        hi = [{"role": "user", "content": "hi"}]
        reply = client.chat.completions.create(model="llama3.2:1b", messages=hi, max_tokens=5)
        assert reply.choices[0].message.content and reply.usage is not None
        stream = client.chat.completions.create(
            model="llama3.2:1b",
            messages=hi,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
        shaped = client.chat.completions.with_raw_response.create(
            model="llama3.2:1b",
            messages=hi,
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        )
        assert shaped.headers["x-corral-schema"] == "valid"
        content = shaped.parse().choices[0].message.content
        assert content is not None and isinstance(json.loads(content), dict)
        vectors = client.embeddings.create(model="nomic-embed-text", input="x")
        assert len(vectors.data[0].embedding) > 8
