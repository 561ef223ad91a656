"""`corral agent` as a real process beside a simulated engine, heartbeating to a real
gateway: it joins with telemetry, goes offline when killed, is removed after the longer
silence, comes back when restarted, and waits out an absent gateway."""

from __future__ import annotations

import asyncio

import httpx

from corral.agent.telemetry import reachable_addresses
from corral.sim.launch import NodeSpec, VllmSpec, start_nodes, stop_nodes
from tests.agent.support import TOKEN, agent_process
from tests.helpers import FAST_SIM, free_port, run_gateway, until

STARTUP = 30.0  # an agent process imports Corral first; the machine may be busy


async def test_an_agent_registers_its_node_with_telemetry() -> None:
    (sim,) = await start_nodes([NodeSpec(config=FAST_SIM)])
    try:
        async with (
            run_gateway([], fleet={"token": TOKEN}) as gw,
            agent_process(gw.url, sim.url) as agent,
            httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
        ):
            nodes = gw.gw.nodes.nodes
            await until(lambda: "n1" in nodes and gw.gw.fleet.backends["n1"].healthy, STARTUP)
            shown = (await client.get("/admin/nodes/n1")).json()
            answer = await client.post(
                "/api/generate", json={"model": "llama3.2:1b", "prompt": "hi", "stream": False}
            )
            output = agent.stop()
    finally:
        await stop_nodes([sim])
    assert shown["status"] == "online" and shown["source"] == "agent"
    assert shown["url"] == sim.url and shown["kind"] == "ollama" and shown["relay"] is False
    assert shown["engine"]["reachable"] is True
    assert shown["engine"]["version"]  # the sim answers /api/version
    assert "llama3.2:1b" in shown["models"]
    assert shown["addresses"] == reachable_addresses()
    assert shown["cpu"]["count"] >= 1 and 0 <= shown["cpu"]["percent"] <= 100
    assert shown["memory"]["total_bytes"] > 0
    # nvidia-ml-py is installed here, but there is no GPU or driver: none, not an error.
    assert shown["gpus"] == [] and shown["vram_bytes"] is None
    assert shown["interval_s"] == 0.2
    assert answer.status_code == 200 and answer.headers["X-Corral-Backend"] == "n1"
    assert "corral agent: node n1 -> " in output
    assert "registered with gateway" in output
    assert "Traceback" not in output and " ERROR " not in output


async def test_an_agent_beside_an_openai_kind_engine_reports_its_served_models() -> None:
    (vllm,) = await start_nodes([VllmSpec(model="Qwen/Qwen2.5-0.5B-Instruct")])
    try:
        async with (
            run_gateway([], fleet={"token": TOKEN}) as gw,
            agent_process(gw.url, vllm.url + "/v1", "--kind", "openai", node_id="v1"),
        ):
            await until(lambda: "v1" in gw.gw.nodes.nodes, STARTUP)
            node = gw.gw.nodes.nodes["v1"]
            state = gw.gw.fleet.backends["v1"]
    finally:
        await stop_nodes([vllm])
    assert state.kind == "openai" and state.url == vllm.url  # the /v1 suffix is dropped
    assert node.beat.models == ["Qwen/Qwen2.5-0.5B-Instruct"]
    assert node.beat.loaded == node.beat.models


async def test_a_killed_agents_node_goes_offline_is_removed_and_returns_on_restart() -> None:
    # Removal waits long enough for a restarted agent to start (it imports Corral).
    fleet = {"token": TOKEN, "offline_after_s": 1.0, "remove_after_s": 8.0}
    (sim,) = await start_nodes([NodeSpec(config=FAST_SIM)])
    try:
        async with (
            run_gateway([], fleet=fleet) as gw,
            agent_process(gw.url, sim.url) as agent,
            httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
        ):
            registry, backends = gw.gw.nodes, gw.gw.fleet.backends
            await until(lambda: "n1" in backends and backends["n1"].routable, STARTUP)

            joined = registry.nodes["n1"].first_seen
            agent.kill()
            await until(lambda: registry.nodes["n1"].status == "offline", 5)
            assert not backends["n1"].routable  # the engine still answers; nobody vouches
            shown = (await client.get("/admin/nodes/n1")).json()
            assert shown["status"] == "offline" and shown["silent_s"] >= 1.0

            agent.start()  # the same node, a new agent process
            await until(lambda: registry.nodes["n1"].status == "online", STARTUP)
            assert registry.nodes["n1"].first_seen == joined  # back, not registered anew
            await until(lambda: backends["n1"].routable, 5)

            agent.kill()
            await until(lambda: "n1" not in backends, 15)
            assert (await client.get("/admin/nodes/n1")).status_code == 404

            agent.start()
            await until(lambda: "n1" in backends and backends["n1"].routable, STARTUP)
    finally:
        await stop_nodes([sim])


async def test_the_agent_waits_out_an_absent_gateway_and_logs_it_once() -> None:
    port = free_port()
    attempts = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()  # a gateway that is not there (yet): the connection drops

    (sim,) = await start_nodes([NodeSpec(config=FAST_SIM)])
    try:
        async with agent_process(f"http://127.0.0.1:{port}", sim.url) as agent:
            absent = await asyncio.start_server(hang_up, "127.0.0.1", port)
            async with absent:
                await until(lambda: attempts >= 4, STARTUP)  # retried, backing off
            await absent.wait_closed()
            assert agent.proc is not None and agent.proc.poll() is None  # still going
            async with run_gateway([], fleet={"token": TOKEN}, bind_port=port) as gw:
                await until(lambda: "n1" in gw.gw.nodes.nodes, STARTUP)
                # The agent logs it once the answer is back, a moment after the gateway:
                # "registered", or "heartbeating" when the answer to the heartbeat that
                # registered it came later than the agent's timeout (a busy machine; 0.5 s
                # at this interval), so that the next one found the node known already.
                await until(lambda: "with gateway" in agent.peek(), STARTUP)
                output = agent.stop()  # before the gateway goes away again
    finally:
        await stop_nodes([sim])
    assert output.count("unreachable") == 1, output
    assert output.count("with gateway") == 1, output
    assert "node n1 registered with gateway" in output or "node n1 heartbeating with" in output


async def test_a_refused_token_is_logged_once_and_registers_nothing() -> None:
    (sim,) = await start_nodes([NodeSpec(config=FAST_SIM)])
    try:
        async with (
            run_gateway([], fleet={"token": TOKEN}) as gw,
            agent_process(gw.url, sim.url, token="w" * 32) as agent,
        ):
            await until(lambda: "refused" in agent.peek(), STARTUP)
            await asyncio.sleep(2.0)  # a few more refused attempts
            assert gw.gw.fleet.backends == {}
            output = agent.stop()
    finally:
        await stop_nodes([sim])
    assert output.count("gateway refused the heartbeat: 401") == 1, output
    assert "check the fleet token" in output
