"""The request audit on the live gateway (real sockets, SQLite and PostgreSQL): what
``audit.content`` keeps per level, in both dialects and across them, the search API,
and the purge job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
from sqlalchemy import func, select

from corral.adapters.store import Store, ledger
from corral.adapters.store.audit_search import search_everything
from corral.adapters.store.keys import create_user_with_key, load_or_create_secret
from corral.adapters.store.records import usage_entry
from corral.adapters.store.request_audit import (
    ContentLine,
    RequestAuditEntry,
    request_audit_entry,
)
from corral.adapters.store.schema import RequestAuditRow, UsageRow
from corral.core.usage import UsageRecord
from corral.sim.launch import NodeSpec, start_node
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_launch import VllmSpec
from tests.helpers import FAST_SIM, RunningGateway, run_gateway, until

MODEL = "llama3.2:1b"
QWEN = "Qwen/Qwen2.5-7B-Instruct"


@dataclass
class Audited:
    gateway: RunningGateway
    store: Store
    admin: str
    user: str

    @property
    def url(self) -> str:
        return self.gateway.url

    def headers(self, who: str = "user") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin if who == 'admin' else self.user}"}

    async def rows(self, count: int) -> list[RequestAuditEntry]:
        """The request audit rows, oldest first, once ``count`` of them are stored."""
        store = self.store

        async def stored() -> int:
            async with store.read() as session:
                return int(
                    await session.scalar(select(func.count()).select_from(RequestAuditRow)) or 0
                )

        for _ in range(500):
            if await stored() >= count:
                break
            await asyncio.sleep(0.01)
        page = await search_everything(store, kind="request")
        found = [hit.request for hit in reversed(page.items) if hit.request is not None]
        assert len(found) == count, found
        return found


@asynccontextmanager
async def audited_gateway(
    store: Store, tmp_path: Path, content: str, **audit: Any
) -> AsyncIterator[Audited]:
    secret = load_or_create_secret(tmp_path / "secret.key")
    _, admin = await create_user_with_key(
        store, "root", secret, role="admin", scopes=("inference", "admin")
    )
    _, alice = await create_user_with_key(store, "alice", secret)
    node = await start_node(NodeSpec(models=(MODEL,), config=FAST_SIM, name="sim0"))
    vllm = await start_node(VllmSpec(model=QWEN, config=VllmConfig(speed=200, jitter=0)))
    backends = [{"name": "sim0", "url": node.url}, {"name": "vllm0", "url": "openai+" + vllm.url}]
    try:
        async with run_gateway(
            backends,
            store=store,
            data_dir=str(tmp_path),
            auth={"mode": "on"},
            usage={"batch_s": 0.05},
            audit={"content": content, **audit},
        ) as gw:
            yield Audited(gw, store, admin.plaintext, alice.plaintext)
    finally:
        await vllm.stop()
        await node.stop()


async def test_content_off_writes_usage_rows_and_no_audit_rows(
    store: Store, tmp_path: Path
) -> None:
    async with audited_gateway(store, tmp_path, "off") as a:
        assert a.gateway.gw.content is None
        async with httpx.AsyncClient(base_url=a.url, timeout=30, headers=a.headers()) as client:
            body = {"model": MODEL, "prompt": "keep this to yourself", "stream": False}
            assert (await client.post("/api/generate", json=body)).status_code == 200
        await until(lambda: a.gateway.gw.ledger is not None and a.gateway.gw.ledger.committed == 1)
        async with store.read() as session:
            assert await session.scalar(select(func.count()).select_from(UsageRow)) == 1
            assert await session.scalar(select(func.count()).select_from(RequestAuditRow)) == 0


async def test_metadata_keeps_who_what_and_parameters_but_no_text(
    store: Store, tmp_path: Path
) -> None:
    async with audited_gateway(store, tmp_path, "metadata") as a:
        async with httpx.AsyncClient(base_url=a.url, timeout=30, headers=a.headers()) as client:
            chat = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "my secret recipe"}],
                "options": {"temperature": 0.3, "num_predict": 6},
                "keep_alive": "5m",
            }
            async with client.stream("POST", "/api/chat", json=chat) as streamed:
                assert streamed.status_code == 200
                await streamed.aread()
            oa = {
                "model": QWEN,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "the password is swordfish"},
                ],
                "max_tokens": 5,
                "temperature": 0.1,
                "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
            }
            assert (await client.post("/v1/chat/completions", json=oa)).status_code == 200
            refused = await client.post("/api/generate", json={"model": MODEL, "prompt": 5})
            assert refused.status_code == 400
        first, second, third = await a.rows(3)
    assert (first.user_name, first.key_prefix) == ("alice", a.user[4:12])
    assert (first.endpoint, first.dialect, first.model, first.backend) == (
        "/api/chat",
        "ollama",
        MODEL,
        "sim0",
    )
    assert first.status == 200 and first.level == "metadata"
    assert first.completion_tokens == 6 and first.prompt_tokens and first.ttft_ms is not None
    assert first.params == {
        "model": MODEL,
        "options": {"temperature": 0.3, "num_predict": 6},
        "keep_alive": "5m",
        "omitted": ["messages"],
    }
    assert second.params == {
        "model": QWEN,
        "max_tokens": 5,
        "temperature": 0.1,
        "omitted": ["messages", "tools"],
    }
    assert (second.dialect, second.backend) == ("openai", "vllm0")
    assert third.status == 400 and third.error and third.params["omitted"] == ["prompt"]
    for row in (first, second, third):
        assert row.prompt is None and row.response is None
    text = " ".join(str(row) for row in (first, second, third))
    assert "secret recipe" not in text and "swordfish" not in text and "be brief" not in text


async def test_full_keeps_prompts_and_the_answers_the_clients_got_in_every_dialect_pair(
    store: Store, tmp_path: Path
) -> None:
    async with audited_gateway(store, tmp_path, "full") as a:
        ol = ollama.AsyncClient(host=a.url, headers=a.headers())
        answers: list[str] = []
        try:
            parts = []  # Ollama → Ollama, streamed, bytes passed through
            async for chunk in await ol.chat(
                MODEL,
                messages=[{"role": "user", "content": "ollama streamed", "images": ["aGVsbG8="]}],
                stream=True,
                options={"num_predict": 12},
            ):
                parts.append(chunk.message.content or "")
            answers.append("".join(parts))
            reply = await ol.generate(QWEN, "ollama to vllm", options={"num_predict": 7})
            answers.append(reply.response)  # Ollama → vLLM, translated
        finally:
            await ol.close()
        async with openai.AsyncOpenAI(base_url=a.url + "/v1", api_key=a.user, max_retries=0) as oa:
            stream = await oa.chat.completions.create(
                model=QWEN,
                messages=[{"role": "user", "content": "openai streamed"}],
                max_tokens=9,
                stream=True,
            )
            answers.append(
                "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            )
            done = await oa.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "openai to ollama"}],
                max_tokens=8,
            )
            answers.append(done.choices[0].message.content or "")  # OpenAI → Ollama
        rows = await a.rows(4)
    assert [r.level for r in rows] == ["full"] * 4
    assert [r.response for r in rows] == answers and all(answers)
    assert rows[0].prompt == (
        '{"messages":[{"role":"user","content":"ollama streamed",'
        '"images":["<image, 8 characters>"]}],'
        '"tools":[]}'  # the ollama client sends an empty tool list
    )
    assert rows[1].prompt == '{"prompt":"ollama to vllm"}'
    assert "openai streamed" in (rows[2].prompt or "") and rows[2].params["stream"] is True
    assert "openai to ollama" in (rows[3].prompt or "")
    assert not any(r.truncated for r in rows)


async def test_full_cuts_long_text_and_says_so(store: Store, tmp_path: Path) -> None:
    async with audited_gateway(store, tmp_path, "full", max_text_chars=20) as a:
        async with httpx.AsyncClient(base_url=a.url, timeout=30, headers=a.headers()) as client:
            body = {"model": MODEL, "prompt": "x" * 50, "options": {"num_predict": 40}}
            async with client.stream("POST", "/api/generate", json=body) as streamed:
                await streamed.aread()
        (row,) = await a.rows(1)
    assert row.truncated
    assert row.prompt == '{"prompt":"' + "x" * 20 + '"}'
    assert row.response is not None and len(row.response) == 20


async def test_the_search_api_finds_requests_and_admin_events_for_admins_only(
    store: Store, tmp_path: Path
) -> None:
    async with (
        audited_gateway(store, tmp_path, "full") as a,
        httpx.AsyncClient(base_url=a.url, timeout=30) as client,
    ):
        body = {"model": MODEL, "prompt": "Where is the Treasure?", "stream": False}
        assert (
            await client.post("/api/generate", json=body, headers=a.headers())
        ).status_code == 200
        await a.rows(1)
        url = "/admin/audit/search"
        assert (await client.get(url)).status_code == 401
        denied = await client.get(url, headers=a.headers("user"))
        assert denied.status_code == 403 and "admin" in denied.json()["error"]["message"]
        found = await client.get(
            url, params={"text": "treasure", "user": "alice"}, headers=a.headers("admin")
        )
        assert found.status_code == 200, found.text
        page = found.json()
        (hit,) = page["items"]
        assert hit["kind"] == "request" and hit["action"] == "/api/generate"
        assert hit["prompt"] == {"prompt": "Where is the Treasure?"} and hit["response"]
        assert hit["user"] == "alice" and page["more"] is False
        since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        later = await client.get(url, params={"since": since}, headers=a.headers("admin"))
        assert later.status_code == 200 and later.json()["items"] == []
        # Reading requests is itself recorded, and found as an admin event.
        events = await client.get(
            url, params={"kind": "admin", "action": "audit.search"}, headers=a.headers("admin")
        )
        recorded = events.json()["items"]
        assert [e["actor"] for e in recorded] == ["root", "root"]
        assert recorded[-1]["after"] == {
            "text": "treasure",
            "user": "alice",
            "limit": 100,
            "offset": 0,
        }
        for params, field in (
            ({"limit": 5000}, "limit"),
            ({"limit": 0}, "limit"),
            ({"offset": -1}, "offset"),
            ({"since": "2026-05-01T00:00:00"}, "since"),
            ({"since": "yesterday"}, "since"),
            ({"since": "1765000000"}, "since"),  # a number is not read as epoch seconds
            ({"since": "2026-05-02T00:00Z", "until": "2026-05-01T00:00Z"}, "until"),
            ({"kind": "everything"}, "kind"),
            ({"text": "t" * 300}, "text"),
        ):
            bad = await client.get(url, params=params, headers=a.headers("admin"))
            assert bad.status_code == 400, (params, bad.text)
            assert bad.json()["error"]["param"] == field, (params, bad.text)


async def test_the_purge_job_deletes_request_rows_past_retention(
    store: Store, tmp_path: Path
) -> None:
    old = UsageRecord(
        request_id="old",
        endpoint="/api/chat",
        dialect="ollama",
        model=MODEL,
        backend="sim0",
        status=200,
        started_at=(datetime.now(UTC) - timedelta(days=3)).timestamp(),
        duration_s=0.1,
    )
    recent = UsageRecord(
        request_id="recent",
        endpoint="/api/chat",
        dialect="ollama",
        model=MODEL,
        backend="sim0",
        status=200,
        started_at=(datetime.now(UTC) - timedelta(hours=1)).timestamp(),
        duration_s=0.1,
    )
    await ledger.record_usage_batch(
        store,
        [usage_entry(old), usage_entry(recent)],
        [request_audit_entry(r, ContentLine("metadata")) for r in (old, recent)],
    )
    async with audited_gateway(
        store, tmp_path, "metadata", retention_days=1, purge_interval_s=0.05
    ) as a:
        retention = a.gateway.gw.retention
        assert retention is not None
        await until(lambda: retention.purged == 1)
        (kept,) = await a.rows(1)
    assert kept.request_id == "recent"


async def test_prompt_text_leaves_the_local_journal_within_a_purge_interval(
    store: Store, tmp_path: Path
) -> None:
    journal = tmp_path / "usage.journal"

    def holding(text: bytes) -> list[str]:
        found = []
        for path in journal.glob("usage-*.jsonl"):
            with contextlib.suppress(FileNotFoundError):  # deleted since the listing
                if text in path.read_bytes():
                    found.append(path.name)
        return found

    async with audited_gateway(store, tmp_path, "full", purge_interval_s=0.2) as a:
        async with httpx.AsyncClient(base_url=a.url, timeout=30, headers=a.headers()) as client:
            body = {"model": MODEL, "prompt": "my bank PIN is 4711", "stream": False}
            assert (await client.post("/api/generate", json=body)).status_code == 200
        (row,) = await a.rows(1)
        assert "4711" in (row.prompt or "")
        # A quiet gateway's live segment would keep it until it filled; rotation ends it.
        await until(lambda: not holding(b"4711"), timeout=10)
