"""The agent's relay: an engine bound to 127.0.0.1, reached by the gateway only through
the relay, which streams without buffering and forwards only requests bearing the
fleet token."""

from __future__ import annotations

import time

import httpx

from corral.config.fleet import FLEET_TOKEN_HEADER
from corral.sim.launch import NodeSpec, start_nodes, stop_nodes
from corral.sim.model_types import NodeConfig
from tests.agent.support import TOKEN, agent_process
from tests.helpers import free_port, run_gateway, until

STARTUP = 30.0


async def test_the_gateway_reaches_a_localhost_engine_only_through_the_relay() -> None:
    # Slow enough that a buffered answer would show (about a second), model resident.
    spec = NodeSpec(config=NodeConfig(speed=0.1, jitter=0.0), loaded=("llama3.2:1b",))
    (sim,) = await start_nodes([spec])
    relay_port = free_port()
    relay_url = f"http://127.0.0.1:{relay_port}"
    relay_args = ("--relay", "--relay-host", "127.0.0.1", "--relay-port", str(relay_port))
    try:
        async with (
            run_gateway([], fleet={"token": TOKEN}) as gw,
            agent_process(gw.url, sim.url, *relay_args) as agent,
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        ):
            backends = gw.gw.fleet.backends
            await until(lambda: "n1" in backends and backends["n1"].healthy, STARTUP)
            shown = (await client.get("/admin/nodes/n1")).json()

            started = time.monotonic()
            arrivals: list[float] = []
            body = {"model": "llama3.2:1b", "prompt": "tell me", "options": {"num_predict": 30}}
            async with client.stream("POST", "/api/generate", json=body) as resp:
                assert resp.status_code == 200
                assert resp.headers["X-Corral-Backend"] == "n1"
                async for line in resp.aiter_lines():
                    if line:
                        arrivals.append(time.monotonic() - started)
            served = sim.runtime.counters.requests

            # A client that leaves mid-stream cancels the engine's request, relay or not.
            long = body | {"options": {"num_predict": 400}}
            async with client.stream("POST", "/api/generate", json=long) as resp:
                async for line in resp.aiter_lines():
                    if line:
                        break
            await until(lambda: sim.model.stats.cancelled == 1, 10)

            async with httpx.AsyncClient(base_url=relay_url, timeout=10) as direct:
                no_token = await direct.get("/api/tags")
                wrong = await direct.get("/api/tags", headers={FLEET_TOKEN_HEADER: "x" * 40})
                right = await direct.get("/api/tags", headers={FLEET_TOKEN_HEADER: TOKEN})
                elsewhere = await direct.get("/admin/nodes", headers={FLEET_TOKEN_HEADER: TOKEN})
            output = agent.stop()
    finally:
        await stop_nodes([sim])
    assert shown["url"] == relay_url and shown["relay"] is True
    assert shown["engine"]["url"] == sim.url
    assert served == 1
    # Streamed through: the first chunk arrived long before the last.
    assert len(arrivals) > 10
    assert arrivals[0] < arrivals[-1] / 2, arrivals
    assert no_token.status_code == 401 and wrong.status_code == 401
    assert FLEET_TOKEN_HEADER in no_token.json()["error"]
    assert right.status_code == 200 and "llama3.2:1b" in right.text
    assert elsewhere.status_code == 404
    assert f"via its relay on port {relay_port}, advertised as {relay_url}" in output


async def test_a_relay_before_a_dead_engine_answers_502_and_the_node_is_down() -> None:
    relay_port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    relay_args = ("--relay", "--relay-host", "127.0.0.1", "--relay-port", str(relay_port))
    async with (
        run_gateway([], fleet={"token": TOKEN}) as gw,
        agent_process(gw.url, dead, *relay_args) as agent,
    ):
        await until(lambda: "n1" in gw.gw.nodes.nodes, STARTUP)
        async with httpx.AsyncClient(timeout=10) as direct:
            resp = await direct.get(
                f"http://127.0.0.1:{relay_port}/api/tags", headers={FLEET_TOKEN_HEADER: TOKEN}
            )
        node = gw.gw.nodes.nodes["n1"]
        state = gw.gw.fleet.backends["n1"]
        output = agent.stop()
    assert resp.status_code == 502
    assert "cannot reach the engine" in resp.json()["error"]
    assert node.beat.engine.reachable is False and node.beat.engine.error
    assert not state.healthy
    assert output.count("does not answer") == 1
