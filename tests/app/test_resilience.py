"""Failover, timeouts, disconnects, slots and health, over real sockets and simulated nodes."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from corral.sim.launch import NodeSpec, start_node
from corral.sim.model_types import NodeConfig
from tests.helpers import SimFleet, sim_fleet, until

GEN = {"model": "llama3.2:1b", "prompt": "tell me a story", "stream": False}
# Slow enough to hold a stream open: a few tokens a second, model already loaded.
SLOW = NodeConfig(speed=0.05, jitter=0.0)


async def generate(fleet: SimFleet, body: dict[str, object] = GEN) -> httpx.Response:
    async with httpx.AsyncClient(base_url=fleet.url, timeout=20) as client:
        return await client.post("/api/generate", json=body)


def lines(resp: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


@pytest.mark.parametrize("fault", [{"busy": True}, {"error_rate": 1.0}, {"malformed_json": 1.0}])
async def test_a_failing_backend_is_failed_over_before_the_first_byte(
    fault: dict[str, object],
) -> None:
    async with sim_fleet(NodeSpec(), NodeSpec()) as fleet:
        fleet.node("sim0").set_faults(**fault)
        replies = [await generate(fleet) for _ in range(4)]
        assert all(r.status_code == 200 for r in replies)
        assert {r.headers["x-corral-backend"] for r in replies} == {"sim1"}
        assert any(rec.attempts == 2 for rec in fleet.gw.usage)
        assert sum(fleet.node("sim0").state()["counters"]["errors"].values()) >= 1


async def test_when_every_backend_fails_the_client_gets_the_error_in_ollama_shape() -> None:
    async with sim_fleet(NodeSpec(), NodeSpec(), retry={"backoff_s": 0.01}) as fleet:
        for node in fleet.nodes:
            node.set_faults(busy=True)
        resp = await generate(fleet)
        assert resp.status_code == 503
        assert resp.headers["retry-after"]
        assert "server busy" in resp.json()["error"]
        # Both are cooling down after their busy answers: the next request is told so
        # at once instead of hammering them.
        calls = [n.state()["counters"]["requests"] for n in fleet.nodes]
        resp = await generate(fleet)
        assert resp.status_code == 503 and resp.headers["retry-after"]
        assert "2 cooling down" in resp.json()["error"]
        assert [n.state()["counters"]["requests"] for n in fleet.nodes] == calls
        assert fleet.gw.fleet.breakers is not None and fleet.gw.fleet.breakers.clear() == 2
        for node in fleet.nodes:
            node.set_faults(busy=False, error_rate=1.0)
        resp = await generate(fleet)
        assert resp.status_code == 500 and set(resp.json()) == {"error"}


async def test_a_hung_backend_is_abandoned_after_the_first_byte_timeout() -> None:
    async with sim_fleet(NodeSpec(), NodeSpec(), timeouts={"first_byte_s": 0.3}) as fleet:
        fleet.node("sim0").set_faults(hang=True)
        replies = [await generate(fleet) for _ in range(3)]
        assert all(r.status_code == 200 for r in replies)
        assert {r.headers["x-corral-backend"] for r in replies} == {"sim1"}


async def test_a_hung_backend_with_the_model_loaded_is_given_up_on_sooner() -> None:
    limits = {"first_byte_s": 60, "first_byte_loaded_s": 0.3}
    async with sim_fleet(NodeSpec(), NodeSpec(), timeouts=limits) as fleet:
        async with httpx.AsyncClient(timeout=10) as client:
            for node in fleet.nodes:  # load the model on both (a prompt-less generate)
                r = await client.post(f"{node.url}/api/generate", json={"model": GEN["model"]})
                assert r.status_code == 200
        await fleet.gw.fleet.probe_all(models=False)
        fleet.node("sim0").set_faults(hang=True)
        started = asyncio.get_running_loop().time()
        replies = [await generate(fleet) for _ in range(3)]
        assert all(r.status_code == 200 for r in replies)
        assert asyncio.get_running_loop().time() - started < 5  # not 60 s per hang


async def test_a_stream_cut_mid_way_ends_with_an_error_line() -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        fleet.node("sim0").set_faults(drop_mid_stream=1.0, after_chunks=2)
        resp = await generate(fleet, {**GEN, "stream": True})
        assert resp.status_code == 200
        got = lines(resp)
        assert len(got) == 3, got
        assert "failed mid-stream" in str(got[-1]["error"])
        assert fleet.gw.usage[-1].error is not None


async def test_an_error_line_from_the_backend_reaches_the_client_once() -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        fleet.node("sim0").set_faults(error_mid_stream=1.0, after_chunks=1)
        got = lines(await generate(fleet, {**GEN, "stream": True}))
        assert [line for line in got if "error" in line] == [got[-1]]


async def test_a_silent_stream_is_ended_by_the_idle_timeout() -> None:
    spec = NodeSpec(models=("llama3.2:1b",), loaded=("llama3.2:1b",), config=SLOW)
    async with sim_fleet(spec, timeouts={"stream_idle_s": 0.05}) as fleet:
        got = lines(await generate(fleet, {**GEN, "stream": True}))
        assert "idle timeout" in str(got[-1]["error"])
        await until(lambda: fleet.node("sim0").state()["counters"]["cancelled"] == 1)


async def test_client_disconnect_cancels_the_upstream_request() -> None:
    spec = NodeSpec(models=("llama3.2:1b",), loaded=("llama3.2:1b",), config=SLOW)
    async with sim_fleet(spec) as fleet:
        node = fleet.node("sim0")
        async with (
            httpx.AsyncClient(base_url=fleet.url, timeout=20) as client,
            client.stream("POST", "/api/generate", json={**GEN, "stream": True}) as resp,
        ):
            async for _line in resp.aiter_lines():
                break  # one token, then hang up
        await until(lambda: node.state()["counters"]["cancelled"] == 1)
        assert node.state()["in_flight"] == 0
        await until(lambda: fleet.gw.fleet.backends["sim0"].in_flight == 0)
        assert fleet.gw.usage[-1].client_gone


async def test_client_disconnect_before_the_answer_cancels_too() -> None:
    spec = NodeSpec(models=("llama3.2:1b",), loaded=("llama3.2:1b",), config=SLOW)
    async with sim_fleet(spec) as fleet:
        node = fleet.node("sim0")
        task = asyncio.create_task(generate(fleet))
        await until(lambda: node.state()["in_flight"] == 1)
        task.cancel()
        await until(lambda: node.state()["counters"]["cancelled"] == 1)
        await until(lambda: fleet.gw.fleet.backends["sim0"].in_flight == 0)


async def test_requests_beyond_max_concurrency_wait_for_a_slot() -> None:
    spec = NodeSpec(models=("llama3.2:1b",), loaded=("llama3.2:1b",), config=SLOW)
    async with sim_fleet(spec, max_concurrency=1) as fleet:
        node = fleet.node("sim0")
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, node.state()["in_flight"])
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        body = {**GEN, "options": {"num_predict": 3}}
        replies = await asyncio.gather(*(generate(fleet, body) for _ in range(3)))
        watcher.cancel()
        assert [r.status_code for r in replies] == [200, 200, 200]
        assert peak == 1
        assert max(rec.attempts for rec in fleet.gw.usage) == 1


async def test_a_full_queue_and_a_long_wait_get_503_with_retry_after() -> None:
    spec = NodeSpec(models=("llama3.2:1b",), loaded=("llama3.2:1b",), config=SLOW)
    async with sim_fleet(
        spec, max_concurrency=1, queue={"max_waiting": 1, "timeout_s": 0.2}
    ) as fleet:
        first = asyncio.create_task(generate(fleet, {**GEN, "options": {"num_predict": 20}}))
        await until(lambda: fleet.gw.fleet.backends["sim0"].in_flight == 1)
        waiting = asyncio.create_task(generate(fleet))
        await until(lambda: fleet.gw.fleet.scheduler.waiting == 1)
        full = await generate(fleet)
        assert full.status_code == 503 and full.headers["retry-after"]
        assert "queue is full" in full.json()["error"]
        timed_out = await waiting
        assert timed_out.status_code == 503 and timed_out.headers["retry-after"] == "2"
        assert "free slot" in timed_out.json()["error"]
        first.cancel()


async def test_too_many_open_streams_is_a_503() -> None:
    spec = NodeSpec(models=("llama3.2:1b",), loaded=("llama3.2:1b",), config=SLOW)
    async with (
        sim_fleet(spec, limits={"max_streams": 1}) as fleet,
        httpx.AsyncClient(base_url=fleet.url, timeout=20) as client,
        client.stream("POST", "/api/generate", json={**GEN, "stream": True}) as resp,
    ):
        async for _line in resp.aiter_lines():
            break
        second = await client.post("/api/generate", json={**GEN, "stream": True})
        assert second.status_code == 503 and "streams open" in second.json()["error"]


async def test_an_unreachable_backend_is_taken_out_and_put_back_when_it_returns() -> None:
    # least_conn spreads sequential requests, so the revived node must get some.
    async with sim_fleet(
        NodeSpec(), NodeSpec(), health={"interval_s": 0.1}, policy="least_conn"
    ) as fleet:
        sim1 = fleet.node("sim1")
        port = sim1.port
        await sim1.stop()
        replies = [await generate(fleet) for _ in range(3)]
        assert {r.headers["x-corral-backend"] for r in replies} == {"sim0"}
        assert not fleet.gw.fleet.backends["sim1"].healthy
        revived = await start_node(NodeSpec(port=port, models=sim1.spec.models, name="sim1"))
        try:
            await until(lambda: fleet.gw.fleet.backends["sim1"].healthy)
            served = {(await generate(fleet)).headers["x-corral-backend"] for _ in range(4)}
            assert "sim1" in served
        finally:
            await revived.stop()


async def test_a_model_pulled_behind_the_gateways_back_is_found_on_demand() -> None:
    async with sim_fleet(NodeSpec(), health={"interval_s": 60}) as fleet:
        async with httpx.AsyncClient(base_url=fleet.node("sim0").url) as direct:
            pulled = await direct.post("/api/pull", json={"model": "phi3:mini", "stream": False})
            assert pulled.status_code == 200
        resp = await generate(fleet, {**GEN, "model": "phi3:mini"})
        assert resp.status_code == 200


async def test_a_stale_model_list_fails_over_to_another_holder() -> None:
    async with sim_fleet(NodeSpec(), NodeSpec(), health={"interval_s": 60}) as fleet:
        async with httpx.AsyncClient(base_url=fleet.node("sim0").url) as direct:
            deleted = await direct.request("DELETE", "/api/delete", json={"model": "llama3.2:1b"})
            assert deleted.status_code == 200
        replies = [await generate(fleet) for _ in range(4)]
        assert all(r.status_code == 200 for r in replies)
        assert {r.headers["x-corral-backend"] for r in replies} == {"sim1"}
        holders = fleet.gw.fleet.scheduler.holders("llama3.2:1b")
        assert [b.name for b in holders] == ["sim1"]


async def test_model_lists_are_refreshed_on_their_interval() -> None:
    async with sim_fleet(NodeSpec(), health={"interval_s": 0.05, "models_refresh_s": 0.1}) as fleet:
        async with httpx.AsyncClient(base_url=fleet.node("sim0").url) as direct:
            await direct.post("/api/pull", json={"model": "phi3:mini", "stream": False})
        await until(lambda: "phi3:mini" in fleet.gw.fleet.backends["sim0"].models)


async def test_the_whole_request_timeout_ends_a_long_stream() -> None:
    spec = NodeSpec(models=("llama3.2:1b",), loaded=("llama3.2:1b",), config=SLOW)
    async with sim_fleet(spec, timeouts={"request_s": 0.4}) as fleet:
        got = lines(await generate(fleet, {**GEN, "stream": True}))
        assert len(got) > 1
        assert "request timeout" in str(got[-1]["error"])


async def test_cors_is_off_by_default_and_answers_configured_origins() -> None:
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(base_url=fleet.url) as c:
        plain = await c.get("/api/tags", headers={"Origin": "http://app.example"})
        assert "access-control-allow-origin" not in plain.headers
    async with (
        sim_fleet(NodeSpec(), cors={"origins": ["http://app.example"]}) as fleet,
        httpx.AsyncClient(base_url=fleet.url) as c,
    ):
        pre = await c.options(
            "/api/chat",
            headers={
                "Origin": "http://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://app.example"
        resp = await c.post("/api/generate", json=GEN, headers={"Origin": "http://app.example"})
        assert resp.headers["access-control-allow-origin"] == "http://app.example"
        assert "X-Corral-Backend" in resp.headers["access-control-expose-headers"]
        other = await c.get("/api/tags", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
