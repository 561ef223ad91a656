"""The live gateway's scheduling: fair shares by tenant, priorities, residency, reasons."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from corral.core.types import BackendState, RequestInfo
from corral.sim.launch import NodeSpec
from corral.sim.model_types import NodeConfig
from tests.helpers import SimFleet, sim_fleet, until


def dispatch_order(fleet: SimFleet, model: str = "llama3.2:1b") -> list[str]:
    """The tenants of requests in the order the scheduler bound them (a live list)."""
    order: list[str] = []
    policy = fleet.gw.fleet.scheduler.policy(model)
    original = policy.on_dispatch

    def record(backend: BackendState, info: RequestInfo, now: float) -> None:
        order.append(info.tenant)
        original(backend, info, now)

    policy.on_dispatch = record  # type: ignore[method-assign]
    return order


BODY = {"model": "llama3.2:1b", "prompt": "x" * 200, "stream": False, "options": {"num_predict": 8}}
SLOW = NodeConfig(speed=40.0, jitter=0.0)
# Holds the one slot long enough for the others to queue behind it.
LONG = {**BODY, "options": {"num_predict": 2000}}
# Holds it until the test lets go (cancels the request): no race with a busy machine.
ENDLESS = {**BODY, "options": {"num_predict": 10_000_000}}


async def test_backlogged_tenants_are_served_in_proportion_to_their_weights() -> None:
    weights = {"light": 1, "mid": 2, "heavy": 3}
    async with sim_fleet(
        NodeSpec(config=SLOW), max_concurrency=1, tenants={"weights": weights}
    ) as fleet:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            await client.post("/api/generate", json=BODY)  # load the model first
            order = dispatch_order(fleet)

            async def one(tenant: str) -> None:
                r = await client.post(
                    "/api/generate", json=BODY, headers={"X-Corral-Tenant": tenant}
                )
                assert r.status_code == 200

            await asyncio.gather(*(one(t) for _ in range(12) for t in weights))
        # The first request of all binds at once; among the next 12 the weights show.
        window = order[1:13]
        counts = {t: window.count(t) for t in weights}
        assert abs(counts["light"] - 2) <= 1 and abs(counts["mid"] - 4) <= 1
        assert abs(counts["heavy"] - 6) <= 1, counts


async def test_a_priority_header_may_lower_but_not_raise_the_class() -> None:
    async with sim_fleet(
        NodeSpec(config=SLOW), max_concurrency=1, tenants={"priorities": {"vip": 1}}
    ) as fleet:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            await client.post("/api/generate", json=BODY)
            done = dispatch_order(fleet)

            async def one(tenant: str, priority: str | None) -> None:
                headers = {"X-Corral-Tenant": tenant}
                if priority is not None:
                    headers["X-Corral-Priority"] = priority
                body = ENDLESS if tenant == "first" else BODY
                assert (await client.post("/api/generate", json=body, headers=headers)).is_success

            blocker = asyncio.create_task(one("first", None))
            await until(lambda: fleet.gw.fleet.backends["sim0"].in_flight == 1)
            # Queued in this order while the slot is busy: the pretender asks for class 9,
            # the humble vip lowers itself to -1, the plain vip keeps its class 1.
            pretender = asyncio.create_task(one("pretender", "9"))
            await until(lambda: fleet.gw.fleet.scheduler.waiting == 1)
            humble = asyncio.create_task(one("humble", "-1"))
            await until(lambda: fleet.gw.fleet.scheduler.waiting == 2)
            vip = asyncio.create_task(one("vip", None))
            await until(lambda: fleet.gw.fleet.scheduler.waiting == 3)
            blocker.cancel()  # the client leaves: its slot frees and the queue drains
            await asyncio.gather(pretender, humble, vip)
        assert done == ["first", "vip", "pretender", "humble"]


async def test_a_tenant_over_its_queue_share_gets_429_in_its_dialect() -> None:
    async with sim_fleet(
        NodeSpec(config=NodeConfig(speed=4.0, jitter=0.0)),
        max_concurrency=1,
        queue={"max_per_tenant": 1},
    ) as fleet:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            headers = {"X-Corral-Tenant": "greedy"}
            running = asyncio.create_task(client.post("/api/generate", json=LONG, headers=headers))
            await until(lambda: fleet.gw.fleet.backends["sim0"].in_flight == 1)
            waiting = asyncio.create_task(client.post("/api/generate", json=BODY, headers=headers))
            await until(lambda: fleet.gw.fleet.scheduler.waiting == 1)
            ollama = await client.post("/api/generate", json=BODY, headers=headers)
            openai = await client.post(
                "/v1/chat/completions",
                json={"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]},
                headers=headers,
            )
            running.cancel()
            waiting.cancel()
        assert ollama.status_code == 429 and ollama.headers["retry-after"]
        assert "limit per tenant is 1" in ollama.json()["error"]
        assert openai.status_code == 429
        assert openai.json()["error"]["code"] == "rate_limit_exceeded"


async def test_a_served_model_counts_as_loaded_and_probes_read_api_ps() -> None:
    async with sim_fleet(NodeSpec(), NodeSpec()) as fleet:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            r = await client.post("/api/generate", json=BODY)
        backend = fleet.gw.fleet.backends[r.headers["x-corral-backend"]]
        assert r.headers["x-corral-route-reason"]
        loop = asyncio.get_running_loop()
        assert backend.is_loaded("llama3.2:1b", loop.time())
        backend.loaded.clear()
        await fleet.gw.fleet.probe_all(models=False)
        # The simulator's /api/ps says it is resident, with Ollama's 5-minute keep-alive.
        left = backend.loaded["llama3.2:1b"] - loop.time()
        assert 200 < left <= 300
        other = next(b for b in fleet.gw.fleet.backends.values() if b is not backend)
        assert not other.loaded


@pytest.mark.parametrize("header", ["X-Corral-Session"])
async def test_request_facts_reach_the_scheduler(header: str) -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        seen = []
        policy = fleet.gw.fleet.scheduler.policy("llama3.2:1b")
        original = policy.select

        def spy(candidates, info, now):  # type: ignore[no-untyped-def]
            seen.append(info)
            return original(candidates, info, now)

        policy.select = spy  # type: ignore[method-assign]
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            body = {**BODY, "prompt": "p" * 1000}
            r = await client.post(
                "/api/generate", json=body, headers={header: "s1", "X-Corral-Tenant": "t"}
            )
            assert r.status_code == 200
        info = seen[0]
        assert (info.tenant, info.session, info.weight) == ("t", "s1", 1.0)
        record = fleet.gw.usage[-1]
        assert record.tenant == "t" and record.route_reason == r.headers["x-corral-route-reason"]
        assert info.prompt_tokens == 250 and len(info.prefix) == 3


async def test_a_client_may_shorten_its_own_queue_wait() -> None:
    async with sim_fleet(NodeSpec(config=SLOW), max_concurrency=1) as fleet:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            await client.post("/api/generate", json=BODY)
            running = asyncio.create_task(client.post("/api/generate", json=ENDLESS))
            await until(lambda: fleet.gw.fleet.backends["sim0"].in_flight == 1)
            impatient = await client.post(
                "/api/generate", json=BODY, headers={"X-Corral-Max-Wait": "0.05"}
            )
            running.cancel()
        assert impatient.status_code == 503 and impatient.headers["retry-after"]
        assert "within 0.05s" in impatient.json()["error"]


async def test_a_stream_is_charged_to_its_tenant_while_it_runs() -> None:
    async with sim_fleet(NodeSpec(config=NodeConfig(speed=2.0, jitter=0.0))) as fleet:
        queue = fleet.gw.fleet.scheduler.queue
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            await client.post("/api/generate", json=BODY)  # load the model first
            body = {**BODY, "stream": True, "options": {"num_predict": 400}}
            headers = {"X-Corral-Tenant": "streamer"}
            async with client.stream("POST", "/api/generate", json=body, headers=headers) as r:
                seen = 0
                async for _line in r.aiter_lines():
                    seen += 1
                    if seen == 200:
                        # Half way: the prompt and about 200 output tokens (x2) are charged.
                        mid = queue.counter("streamer")
                final = queue.counter("streamer")
        prompt = len(BODY["prompt"]) // 4
        assert prompt + 2 * 150 <= mid < final
        assert final >= prompt + 2 * 400
