"""Faults flipped on and off through /_sim/faults, and client disconnects as cancellations."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import ollama
import pytest

from corral.sim.faults import RUNNER_CRASH, Faults
from corral.sim.launch import SimNode
from corral.sim.wire import BUSY_MESSAGE
from tests.sim.conftest import StartNode
from tests.sim.support import FAST, until

GEN = {"model": "llama3.2:1b", "prompt": "hi", "options": {"num_predict": 8}}


async def set_faults(http: httpx.AsyncClient, **patch: object) -> dict[str, object]:
    resp = await http.post("/_sim/faults", json=patch)
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


async def state(http: httpx.AsyncClient) -> dict[str, object]:
    body: dict[str, object] = (await http.get("/_sim/state")).json()
    return body


def counters(st: dict[str, object]) -> dict[str, object]:
    c = st["counters"]
    assert isinstance(c, dict)
    return c


async def test_faults_endpoint_updates_partially_reads_and_resets(sim: SimNode) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        assert await set_faults(http) == Faults().to_dict()
        after = await set_faults(http, busy=True, error_rate=0.5)
        assert after["busy"] is True and after["error_rate"] == 0.5 and after["hang"] is False
        after = await set_faults(http, error_rate=0)
        assert after["busy"] is True and after["error_rate"] == 0.0
        bad = await http.post("/_sim/faults", json={"explode": True})
        assert bad.status_code == 400 and "unknown fault" in bad.json()["error"]
        assert (await http.post("/_sim/faults", json={"error_rate": 2})).status_code == 400
        assert (await state(http))["faults"] == after
        reset = (await http.post("/_sim/reset")).json()
    assert reset["faults"] == Faults().to_dict()
    assert counters(reset) == {"requests": 0, "completed": 0, "cancelled": 0, "errors": {}}


async def test_busy_fault_answers_503_until_cleared(sim: SimNode) -> None:
    async with (
        httpx.AsyncClient(base_url=sim.url) as http,
        ollama.AsyncClient(host=sim.url) as client,
    ):
        await set_faults(http, busy=True)
        with pytest.raises(ollama.ResponseError) as exc:
            await client.generate(model="llama3.2:1b", prompt="x")
        assert exc.value.status_code == 503 and exc.value.error == BUSY_MESSAGE
        await set_faults(http, busy=False)
        assert (await client.generate(model="llama3.2:1b", prompt="x")).done
        assert counters(await state(http))["errors"] == {"busy": 1}


async def test_error_rate_answers_500_as_a_crashed_runner(sim: SimNode) -> None:
    async with (
        httpx.AsyncClient(base_url=sim.url) as http,
        ollama.AsyncClient(host=sim.url) as client,
    ):
        await set_faults(http, error_rate=1.0)
        with pytest.raises(ollama.ResponseError) as exc:
            await client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "x"}])
        assert exc.value.status_code == 500 and exc.value.error == RUNNER_CRASH
        await set_faults(http, error_rate=0.5)
        codes = [
            (await http.post("/api/generate", json={**GEN, "stream": False})).status_code
            for _ in range(40)
        ]
    assert {200, 500} == set(codes)


async def test_error_rate_draws_are_seeded(start: StartNode) -> None:
    async def pattern() -> list[int]:
        node = await start(faults=Faults(error_rate=0.5))
        async with httpx.AsyncClient(base_url=node.url) as http:
            return [
                (
                    await http.post("/api/embed", json={"model": "nomic-embed-text", "input": "x"})
                ).status_code
                for _ in range(20)
            ]

    assert await pattern() == await pattern()


async def test_hang_never_answers_but_the_control_endpoint_does(sim: SimNode) -> None:
    async with httpx.AsyncClient(base_url=sim.url, timeout=0.3) as http:
        await set_faults(http, hang=True)
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/api/tags")
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/api/generate", json=GEN)
        errors = counters(await state(http))["errors"]
        assert errors == {"hang": 2}
        await set_faults(http, hang=False)
        assert (await http.get("/api/tags")).status_code == 200


async def test_drop_mid_stream_cuts_the_connection_after_some_chunks(sim: SimNode) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        await set_faults(http, drop_mid_stream=1.0, after_chunks=3)
        lines: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("POST", "/api/generate", json=GEN) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    lines.append(line)
        assert len([x for x in lines if x]) == 3
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/api/generate", json={**GEN, "stream": False})
        await set_faults(http, drop_mid_stream=0.0)
        ok = await http.post("/api/generate", json={**GEN, "stream": False})
        assert ok.status_code == 200
        st = await state(http)
    assert counters(st)["errors"] == {"drop_mid_stream": 2}
    assert st["in_flight"] == 0


async def test_malformed_json_breaks_one_chunk(sim: SimNode) -> None:
    async with (
        httpx.AsyncClient(base_url=sim.url) as http,
        ollama.AsyncClient(host=sim.url) as client,
    ):
        await set_faults(http, malformed_json=1.0)
        async with http.stream("POST", "/api/generate", json=GEN) as resp:
            lines = [line async for line in resp.aiter_lines() if line]
        broken = []
        for line in lines:
            try:
                json.loads(line)
            except json.JSONDecodeError:
                broken.append(line)
        assert len(broken) == 1 and len(lines) == 9
        with pytest.raises(json.JSONDecodeError):
            async for _ in await client.generate(model="llama3.2:1b", prompt="x", stream=True):
                pass
        whole = await http.post("/api/generate", json={**GEN, "stream": False})
        with pytest.raises(json.JSONDecodeError):
            json.loads(whole.content)


async def test_error_mid_stream_is_an_ndjson_error_line_under_200(sim: SimNode) -> None:
    async with (
        httpx.AsyncClient(base_url=sim.url) as http,
        ollama.AsyncClient(host=sim.url) as client,
    ):
        await set_faults(http, error_mid_stream=1.0, after_chunks=2)
        async with http.stream("POST", "/api/generate", json=GEN) as resp:
            status = resp.status_code
            lines = [json.loads(line) async for line in resp.aiter_lines() if line]
        assert status == 200
        assert lines[-1] == {"error": RUNNER_CRASH} and len(lines) == 3
        with pytest.raises(ollama.ResponseError) as exc:
            async for _ in await client.chat(
                model="llama3.2:1b", messages=[{"role": "user", "content": "x"}], stream=True
            ):
                pass
        assert exc.value.error == RUNNER_CRASH


async def test_slow_fault_stretches_durations(start: StartNode) -> None:
    node = await start(loaded=("llama3.2:1b",), config=replace(FAST, speed=100.0))
    async with (
        httpx.AsyncClient(base_url=node.url) as http,
        ollama.AsyncClient(host=node.url) as client,
    ):
        base = await client.generate(model="llama3.2:1b", prompt="x", options={"num_predict": 40})
        await set_faults(http, slow=4.0)
        slow = await client.generate(model="llama3.2:1b", prompt="x", options={"num_predict": 40})
    assert base.eval_duration and slow.eval_duration
    assert slow.eval_duration == pytest.approx(4 * base.eval_duration, rel=0.05)


async def test_faults_can_be_set_at_start(start: StartNode) -> None:
    node = await start(faults=Faults(busy=True))
    async with httpx.AsyncClient(base_url=node.url) as http:
        resp = await http.post("/api/generate", json=GEN)
        st = await state(http)
    assert resp.status_code == 503 and resp.json() == {"error": BUSY_MESSAGE}
    assert st["faults"] == Faults(busy=True).to_dict()
    node.set_faults(busy=False)
    assert node.runtime.faults == Faults()


async def test_client_disconnect_mid_stream_is_a_cancellation(start: StartNode) -> None:
    node = await start(loaded=("llama3.2:1b",), config=replace(FAST, speed=1.0))
    body = {**GEN, "options": {"num_predict": 100_000}}  # minutes of generation
    async with httpx.AsyncClient(base_url=node.url) as http:
        async with http.stream("POST", "/api/generate", json=body) as resp:
            async for line in resp.aiter_lines():
                assert json.loads(line)["done"] is False
                break  # leave after the first token
        await until(lambda: counters(node.state())["cancelled"] == 1)
        st = await state(http)
    assert st["in_flight"] == 0 and st["scheduler"]["cancelled"] == 1  # type: ignore[index]
    assert counters(st)["completed"] == 0
    assert node.model.runners(node.runtime.now())[0].active == 0


async def test_client_disconnect_while_waiting_for_a_load_is_a_cancellation(
    start: StartNode,
) -> None:
    node = await start(config=replace(FAST, speed=1.0))  # a cold load takes seconds
    async with httpx.AsyncClient(base_url=node.url, timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                "/api/chat",
                json={"model": "qwen3:4b", "messages": [{"role": "user", "content": "x"}]},
            )
        await until(lambda: counters(node.state())["cancelled"] == 1)
    assert node.model.in_flight == 0


async def test_load_queue_full_is_a_503_over_http(start: StartNode) -> None:
    node = await start(config=replace(FAST, speed=1.0, max_queue=0))
    async with httpx.AsyncClient(base_url=node.url) as http:
        first = asyncio.ensure_future(http.post("/api/generate", json={**GEN, "model": "qwen3:4b"}))
        await until(lambda: node.model.pending_loads == 1)
        second = await http.post("/api/generate", json=GEN)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    assert second.status_code == 503 and second.json() == {"error": BUSY_MESSAGE}
    assert node.model.stats.busy == 1


async def test_pull_error_gives_up_partway_and_adds_nothing(sim: SimNode) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        await set_faults(http, pull_error=1.0)
        streamed = await http.post("/api/pull", json={"model": "phi3:mini"})
        whole = await http.post("/api/pull", json={"model": "phi3:mini", "stream": False})
        tags = (await http.get("/api/tags")).json()["models"]
        st = await state(http)
        await set_faults(http, pull_error=0.0)
        healed = await http.post("/api/pull", json={"model": "phi3:mini", "stream": False})
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert streamed.status_code == 200
    # after_chunks (2) lines of progress, then the error that ends the stream.
    assert [set(line) for line in lines[:2]] == [
        {"status"},
        {"status", "digest", "total", "completed"},
    ]
    assert lines[2:] == [{"error": "max retries exceeded: unexpected EOF"}]
    assert whole.status_code == 500
    assert whole.json() == {"error": "max retries exceeded: unexpected EOF"}
    assert "phi3:mini" not in [m["name"] for m in tags]
    assert counters(st)["errors"] == {"pull_error": 2}
    assert healed.json() == {"status": "success"}
