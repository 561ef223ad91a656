"""Rate limits and budgets on the live gateway: real sockets, SQLite and PostgreSQL."""

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
from corral.adapters.store.quota import charge_period, period_used, set_user_budget
from corral.adapters.store.users import get_user
from corral.core.limits import period_bounds
from corral.sim.launch import NodeSpec
from corral.sim.model_types import NodeConfig
from tests.helpers import SimFleet, sim_fleet, until

MODEL = "llama3.2:1b"
OLLAMA = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 8}}
OPENAI = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@dataclass
class Limited:
    fleet: SimFleet
    store: Store
    keys: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


async def _keys(store: Store, secret: bytes) -> dict[str, str]:
    made = {}
    for name, options in {
        "rate": {"rpm_limit": 2},
        "tokens": {"tpm_limit": 60},
        "busy": {"max_concurrent": 1},
        "spender": {},
        "free": {},
    }.items():
        _, new = await create_user_with_key(store, name, secret, **options)  # type: ignore[arg-type]
        made[name] = new.plaintext
    await set_user_budget(store, "spender", 40)
    return made


@pytest.fixture
async def limited(store: Store, tmp_path: Path) -> AsyncIterator[Limited]:
    keys = await _keys(store, load_or_create_secret(tmp_path / "secret.key"))
    async with sim_fleet(
        NodeSpec(config=NodeConfig(speed=4.0, jitter=0.0)),
        store=store,
        data_dir=str(tmp_path),
        auth={"mode": "on", "reload_s": 0.2},
    ) as fleet:
        yield Limited(fleet, store, keys)


async def test_requests_per_minute_give_429_with_retry_after_in_both_dialects(
    limited: Limited,
) -> None:
    h = limited.headers("rate")
    async with httpx.AsyncClient(base_url=limited.fleet.url, timeout=30) as client:
        assert (await client.post("/api/generate", json=OLLAMA, headers=h)).status_code == 200
        ok = await client.post("/v1/chat/completions", json=OPENAI, headers=h)
        assert ok.status_code == 200
        ollama = await client.post("/api/generate", json=OLLAMA, headers=h)
        openai = await client.post("/v1/chat/completions", json=OPENAI, headers=h)
        other = await client.post("/api/generate", json=OLLAMA, headers=limited.headers("free"))
    assert ollama.status_code == 429 and 1 <= int(ollama.headers["retry-after"]) <= 30
    assert ollama.json()["error"].startswith("requests per minute limit of 2 for key ")
    assert "resets in" in ollama.json()["error"]
    assert openai.status_code == 429 and openai.headers["retry-after"]
    error = openai.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "requests per minute limit of 2" in error["message"]
    assert other.status_code == 200  # limits are per key


async def test_tokens_per_minute_refuse_once_a_request_used_them(limited: Limited) -> None:
    h = limited.headers("tokens")
    long = {**OLLAMA, "prompt": "word " * 60, "options": {"num_predict": 30}}
    async with httpx.AsyncClient(base_url=limited.fleet.url, timeout=30) as client:
        first = await client.post("/api/generate", json=long, headers=h)
        assert first.status_code == 200
        assert first.json()["prompt_eval_count"] + first.json()["eval_count"] > 60
        refused = await client.post("/v1/chat/completions", json=OPENAI, headers=h)
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert "tokens per minute limit of 60 for key" in refused.json()["error"]["message"]


async def test_a_user_holds_at_most_max_concurrent_requests(limited: Limited) -> None:
    h = limited.headers("busy")
    gw = limited.fleet.gw
    slow = {**OLLAMA, "stream": True, "options": {"num_predict": 400}}
    async with httpx.AsyncClient(base_url=limited.fleet.url, timeout=30) as client:
        async with client.stream("POST", "/api/generate", json=slow, headers=h) as held:
            assert held.status_code == 200
            # The stream is running. Its line iterator is kept: one dropped here would
            # be finalized at once, closing the stream before the requests below.
            lines = held.aiter_lines()
            await lines.__anext__()
            ollama = await client.post("/api/generate", json=OLLAMA, headers=h)
            openai = await client.post("/v1/chat/completions", json=OPENAI, headers=h)
        # The client left mid-stream: its place is given back.
        await until(lambda: gw.fleet.backends["sim0"].in_flight == 0)
        after = await client.post("/api/generate", json=OLLAMA, headers=h)
    assert ollama.status_code == 429 and ollama.headers["retry-after"] == "1"
    assert "concurrent requests limit of 1 for user busy" in ollama.json()["error"]
    assert openai.status_code == 429
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    assert after.status_code == 200


async def test_a_stream_crossing_the_budget_finishes_and_the_next_is_refused(
    limited: Limited,
) -> None:
    h = limited.headers("spender")
    stream = {**OLLAMA, "stream": True, "options": {"num_predict": 60}}
    async with httpx.AsyncClient(base_url=limited.fleet.url, timeout=30) as client:
        async with client.stream("POST", "/api/generate", json=stream, headers=h) as r:
            lines = [json.loads(line) async for line in r.aiter_lines() if line]
        assert r.status_code == 200 and lines[-1]["done"] is True
        assert lines[-1]["eval_count"] == 60  # allowed to run past the 40-token budget
        ollama = await client.post("/api/generate", json=OLLAMA, headers=h)
        openai = await client.post("/v1/chat/completions", json=OPENAI, headers=h)
    now = datetime.now(UTC)
    start, end = period_bounds("month", now)
    assert ollama.status_code == 403
    assert ollama.json()["error"] == (
        f"token budget of 40 for {start:%B %Y} exhausted; resets {end:%Y-%m-%dT%H:%MZ}"
    )
    assert openai.status_code == 403
    assert openai.json()["error"]["code"] == "insufficient_quota"
    # The charge reaches the store on the next reload, so a restart keeps it.
    user = await get_user(limited.store, "spender")
    spent = lines[-1]["eval_count"] + lines[-1]["prompt_eval_count"]

    for _ in range(100):  # a few reloads at most (auth.reload_s is 0.2 here)
        if await period_used(limited.store, user.id, start) == spent:
            break
        await asyncio.sleep(0.05)
    assert await period_used(limited.store, user.id, start) == spent


async def test_budget_spent_elsewhere_arrives_with_the_reload(limited: Limited) -> None:
    user = await get_user(limited.store, "spender")
    start, end = period_bounds("month", datetime.now(UTC))
    await charge_period(limited.store, user.id, start, end, 40)  # another replica's spending
    counters = limited.fleet.gw.auth.limits.counters
    await until(lambda: counters.spent("spender", start) == 40)
    async with httpx.AsyncClient(base_url=limited.fleet.url, timeout=30) as client:
        refused = await client.post(
            "/api/generate", json=OLLAMA, headers=limited.headers("spender")
        )
    assert refused.status_code == 403
