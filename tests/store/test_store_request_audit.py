"""Request audit rows on both engines: written with their usage rows, replayed once,
searched beside admin events, purged after retention."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from corral.adapters.store import Store, audit, ledger
from corral.adapters.store.audit_search import search_everything
from corral.adapters.store.journal import Journal
from corral.adapters.store.records import usage_entry
from corral.adapters.store.request_audit import (
    ContentLine,
    RequestAuditEntry,
    purge_request_audit,
    request_audit_entry,
)
from corral.adapters.store.schema import RequestAuditRow, UsageRow
from corral.adapters.store.usage_log import UsageLog
from corral.core.errors import BadRequest
from corral.core.usage import UsageRecord

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def record(n: int, *, user: str | None = "alice", model: str = "qwen2.5:0.5b") -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{n}",
        endpoint="/api/chat",
        dialect="ollama",
        model=model,
        backend="gpu1",
        status=200,
        started_at=(T0 + timedelta(minutes=n)).timestamp(),
        duration_s=0.5,
        ttfb_s=0.05,
        prompt_tokens=10,
        completion_tokens=20,
        user=user,
        key_prefix="abcd1234" if user else None,
    )


def full(prompt: str, answer: str) -> ContentLine:
    return ContentLine(
        "full",
        {"options": {"temperature": 0.2}, "omitted": ["messages"]},
        json.dumps({"messages": [{"role": "user", "content": prompt}]}, ensure_ascii=False),
        answer,
    )


async def counts(store: Store) -> tuple[int, int]:
    async with store.read() as session:
        usage = await session.scalar(select(func.count()).select_from(UsageRow))
        audited = await session.scalar(select(func.count()).select_from(RequestAuditRow))
    return int(usage or 0), int(audited or 0)


async def test_audit_rows_are_written_with_their_usage_rows_and_a_replay_adds_nothing(
    store: Store,
) -> None:
    records = [record(i) for i in range(4)]
    entries = [usage_entry(r) for r in records]
    audits = [
        request_audit_entry(r, full(f"question {i}", f"answer {i}")) for i, r in enumerate(records)
    ]
    assert await ledger.record_usage_batch(store, entries, audits) == 4
    assert await ledger.record_usage_batch(store, entries, audits) == 0
    assert await counts(store) == (4, 4)
    page = await search_everything(store, kind="request")
    first = page.items[-1].request
    assert first is not None
    assert (first.request_id, first.user_name, first.status, first.level) == (
        "req-0",
        "alice",
        200,
        "full",
    )
    assert (first.prompt_tokens, first.completion_tokens, first.duration_ms) == (10, 20, 500.0)
    assert first.params == {"options": {"temperature": 0.2}, "omitted": ["messages"]}
    assert first.response == "answer 0" and "question 0" in (first.prompt or "")


async def test_a_refused_audit_row_rolls_back_its_whole_batch(store: Store) -> None:
    good = request_audit_entry(record(1), full("q", "a"))
    bad = replace(good, request_id="req-2", level="everything")
    with pytest.raises(BadRequest, match="level"):
        await ledger.record_usage_batch(
            store, [usage_entry(record(1)), usage_entry(record(2))], [good, bad]
        )
    assert await counts(store) == (0, 0)  # nothing half-written


async def test_journaled_audit_lines_survive_a_crash_and_are_replayed_once(
    store: Store, tmp_path: Path
) -> None:
    first = UsageLog(store, Journal(tmp_path / "journal"), batch_s=60)
    await first.start()
    for i in range(3):
        first.append(record(i), "ollama", full(f"secret plan {i}", "ok"))
    first.append(record(3))  # a request with the audit off keeps only its usage row
    first.journal.close()  # a crash: nothing drained, the lines are in the journal only
    assert await counts(store) == (0, 0)
    again = UsageLog(store, Journal(tmp_path / "journal"), batch_s=60)
    await again.start()  # the replay
    await again.stop()
    assert await counts(store) == (4, 3)
    third = UsageLog(store, Journal(tmp_path / "journal"), batch_s=60)
    await third.start()
    await third.stop()
    assert await counts(store) == (4, 3)


async def test_search_filters_by_user_model_time_kind_action_and_text(store: Store) -> None:
    await audit.add_audit(
        store, "root", "key.create", "alice", after={"scopes": ["inference"]}, time=T0
    )
    rows = [
        (record(1), full('How do I "quote" 100% of_this?', "Use a backslash.")),
        (record(2, user="bob"), full("Tell me about Llamas", "They hum.")),
        (record(3, model="llama3.2:1b"), ContentLine("metadata", {"stream": True})),
    ]
    await ledger.record_usage_batch(
        store,
        [usage_entry(r) for r, _ in rows],
        [request_audit_entry(r, c) for r, c in rows],
    )
    everything = await search_everything(store)
    assert [
        (h.kind, h.request.request_id if h.request else h.event.action) for h in everything.items
    ] == [  # type: ignore[union-attr]
        ("request", "req-3"),
        ("request", "req-2"),
        ("request", "req-1"),
        ("admin", "key.create"),
    ]

    async def ids(**filters: object) -> list[str]:
        page = await search_everything(store, **filters)  # type: ignore[arg-type]
        return [
            h.request.request_id if h.request else f"admin:{h.event.action}" for h in page.items
        ]  # type: ignore[union-attr]

    assert await ids(user="bob") == ["req-2"]
    assert await ids(user="root") == ["admin:key.create"]
    assert await ids(model="llama3.2:1b") == ["req-3"]  # admin events have no model
    assert await ids(kind="admin") == ["admin:key.create"]
    assert await ids(action="/api/chat", kind="request") == ["req-3", "req-2", "req-1"]
    assert await ids(action="key.create") == ["admin:key.create"]
    window = {"since": T0 + timedelta(minutes=2), "until": T0 + timedelta(minutes=3)}
    assert await ids(**window) == ["req-2"]
    # Literal, any case, in prompts, answers and admin events alike.
    assert await ids(text="LLAMAS") == ["req-2"]
    assert await ids(text="hum.") == ["req-2"]
    assert await ids(text='"quote" 100%') == ["req-1"]
    assert await ids(text="of_this") == ["req-1"]
    assert await ids(text="100_") == []  # _ is itself, not any character
    assert await ids(text="inference") == ["admin:key.create"]
    assert await ids(text="stream") == []  # parameters are not searched as text


async def test_search_pages_across_both_kinds(store: Store) -> None:
    for i in range(3):
        await audit.add_audit(
            store, "root", "user.create", f"u{i}", time=T0 + timedelta(minutes=i, seconds=30)
        )
    rows = [record(i) for i in range(3)]
    await ledger.record_usage_batch(
        store,
        [usage_entry(r) for r in rows],
        [request_audit_entry(r, ContentLine("metadata")) for r in rows],
    )
    seen = []
    offset = 0
    while True:
        page = await search_everything(store, limit=4, offset=offset)
        seen += [h.time for h in page.items]
        if not page.more:
            break
        offset += 4
    assert len(seen) == 6 and seen == sorted(seen, reverse=True)
    assert [len((await search_everything(store, limit=4, offset=o)).items) for o in (0, 4, 8)] == [
        4,
        2,
        0,
    ]


async def test_bad_search_input_is_refused_naming_the_field(store: Store) -> None:
    with pytest.raises(BadRequest) as naive:
        await search_everything(store, since=datetime(2026, 5, 1))
    assert naive.value.param == "since"
    with pytest.raises(BadRequest) as backwards:
        await search_everything(store, since=T0, until=T0 - timedelta(days=1))
    assert backwards.value.param == "until"
    for limit in (0, 1001):
        with pytest.raises(BadRequest) as page:
            await search_everything(store, limit=limit)
        assert page.value.param == "limit"
    with pytest.raises(BadRequest) as long:
        await search_everything(store, text="x" * 257)
    assert long.value.param == "text"
    # SQL-ish text is just text.
    assert (await search_everything(store, text="'; DROP TABLE request_audit;--")).items == []
    assert await counts(store) == (0, 0)


async def test_purge_deletes_only_rows_past_retention_in_batches(store: Store) -> None:
    rows = [record(i) for i in range(7)]
    await ledger.record_usage_batch(
        store,
        [usage_entry(r) for r in rows],
        [request_audit_entry(r, full("q", "a")) for r in rows],
    )
    cutoff = T0 + timedelta(minutes=5)
    assert await purge_request_audit(store, cutoff, batch=2) == 5
    page = await search_everything(store, kind="request")
    assert [h.request.request_id for h in page.items] == ["req-6", "req-5"]  # type: ignore[union-attr]
    assert await counts(store) == (7, 2)  # the usage ledger is not the audit's to purge
    assert await purge_request_audit(store, cutoff) == 0
    with pytest.raises(BadRequest):
        await purge_request_audit(store, datetime(2026, 5, 1))


async def test_long_labels_are_cut_to_their_columns(store: Store) -> None:
    entry = RequestAuditEntry(
        request_id="r",
        time=T0,
        model="m" * 300,
        endpoint="/api/chat",
        dialect="ollama",
        status=400,
        level="metadata",
        error="e" * 900,
    )
    await ledger.record_usage_batch(store, [], [entry])
    stored = (await search_everything(store)).items[0].request
    assert stored is not None
    assert len(stored.model) == 256 and len(stored.error or "") == 512
