"""Streams are charged to budgets as they go (SQLite and PostgreSQL, simulated node): an
abandoned stream pays for what it streamed, concurrent streams see each other's
spending, and a stream that crosses the budget still finishes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from corral.adapters.store import Store
from corral.adapters.store.keys import create_user_with_key, load_or_create_secret
from corral.adapters.store.quota import period_used, set_user_budget
from corral.adapters.store.users import get_user
from corral.core.limits import period_bounds
from corral.sim.launch import NodeSpec
from corral.sim.model_types import NodeConfig
from tests.helpers import SimFleet, sim_fleet, until

MODEL = "llama3.2:1b"
# About 60 tokens a second per stream: slow enough to act mid-stream, quick to finish.
SLOW = NodeConfig(speed=0.2, jitter=0.0, num_parallel=4)


@dataclass
class Budgeted:
    fleet: SimFleet
    store: Store
    keys: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def spent(self, who: str) -> int:
        start = period_bounds("month", datetime.now(UTC))[0]
        return self.fleet.gw.auth.limits.counters.spent(who, start)


@pytest.fixture
async def budgeted(store: Store, tmp_path: Path) -> AsyncIterator[Budgeted]:
    secret = load_or_create_secret(tmp_path / "secret.key")
    keys = {}
    for name, budget in (("leaver", 100_000), ("crowd", 100)):
        _, new = await create_user_with_key(store, name, secret)
        await set_user_budget(store, name, budget)
        keys[name] = new.plaintext
    async with sim_fleet(
        NodeSpec(config=SLOW, loaded=(MODEL,)),
        store=store,
        data_dir=str(tmp_path),
        auth={"mode": "on", "reload_s": 0.2},
    ) as fleet:
        yield Budgeted(fleet, store, keys)


async def test_an_abandoned_stream_is_charged_the_tokens_it_streamed(budgeted: Budgeted) -> None:
    body = {"model": MODEL, "prompt": "tell me a long story", "options": {"num_predict": 400}}
    raw = json.dumps(body).encode()
    prompt_estimate = len(raw) // 4  # what admission estimates
    gw = budgeted.fleet.gw
    async with httpx.AsyncClient(base_url=budgeted.fleet.url, timeout=30) as client:
        async with client.stream(
            "POST", "/api/generate", content=raw, headers=budgeted.headers("leaver")
        ) as stream:
            lines = 0
            async for _ in stream.aiter_lines():
                lines += 1
                if lines == 40:
                    break
            # Charged as it goes: two batches of 16 at least, before the stream ends.
            assert budgeted.spent("leaver") >= 32
        # The client left mid-stream; the gateway settles what it streamed.
        await until(lambda: gw.fleet.backends["sim0"].in_flight == 0)
    await until(lambda: gw.usage[-1].client_gone)
    spent = budgeted.spent("leaver")
    # No counts came: the record holds an estimate, the prompt's and the tokens the meter
    # saw streamed, and that is the charge too.
    rec = gw.usage[-1]
    assert rec.usage_source == "estimated"
    assert rec.prompt_tokens is not None and rec.completion_tokens is not None
    assert 40 <= rec.completion_tokens < 120, rec  # what it got, not all 400
    assert rec.prompt_tokens < prompt_estimate  # its text, not the whole body, a token per 4
    assert spent == rec.prompt_tokens + rec.completion_tokens
    # The charge reaches the store on the next reload.
    user = await get_user(budgeted.store, "leaver")
    start = period_bounds("month", datetime.now(UTC))[0]
    for _ in range(100):
        if await period_used(budgeted.store, user.id, start) == spent:
            break
        await asyncio.sleep(0.05)
    assert await period_used(budgeted.store, user.id, start) == spent


async def test_concurrent_streams_push_spending_past_the_budget_and_the_next_is_refused(
    budgeted: Budgeted,
) -> None:
    h = budgeted.headers("crowd")
    body = {"model": MODEL, "prompt": "go", "options": {"num_predict": 150}}
    async with httpx.AsyncClient(base_url=budgeted.fleet.url, timeout=60) as client:

        async def run_stream(started: asyncio.Event) -> list[dict[str, object]]:
            async with client.stream("POST", "/api/generate", json=body, headers=h) as r:
                assert r.status_code == 200
                got = []
                async for line in r.aiter_lines():
                    if line:
                        got.append(json.loads(line))
                        started.set()
                return got

        events = [asyncio.Event() for _ in range(3)]
        streams = [asyncio.create_task(run_stream(e)) for e in events]
        for event in events:  # all three admitted before any charge: the budget was whole
            await asyncio.wait_for(event.wait(), 10)
        await until(lambda: budgeted.spent("crowd") >= 100, timeout=20)
        assert not any(s.done() for s in streams)  # spent while they still run
        during = await client.post("/api/generate", json={**body, "stream": False}, headers=h)
        assert during.status_code == 403
        assert during.json()["error"].startswith("token budget of 100 for ")
        results = await asyncio.gather(*streams)
        after = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "x"}, headers=h
        )
    # Each crossed the budget together and still finished whole.
    finals = [lines[-1] for lines in results]
    assert all(f["done"] is True and f["eval_count"] == 150 for f in finals)
    # Settled with the backend's counts: exactly what the three used.
    total = sum(int(f["prompt_eval_count"]) + int(f["eval_count"]) for f in finals)  # type: ignore[call-overload]
    assert budgeted.spent("crowd") == total > 100
    assert after.status_code == 403 and after.json()["error"]["code"] == "insufficient_quota"
