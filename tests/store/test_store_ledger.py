"""The usage ledger: idempotent batches and grouped sums on both engines."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from corral.adapters.store import Store, ledger, users
from corral.adapters.store.records import UsageEntry, usage_entry
from corral.core.errors import BadRequest
from corral.core.usage import UsageRecord

T0 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


def entry(n: int, *, user_id: int | None, model: str = "qwen", at: datetime = T0) -> UsageEntry:
    return UsageEntry(
        request_id=f"req-{n}",
        time=at,
        model=model,
        dialect_in="openai",
        dialect_out="ollama",
        status=200,
        user_id=user_id,
        key_prefix="abcd1234",
        backend="gpu1",
        prompt_tokens=10,
        completion_tokens=5,
        ttft_ms=12.5,
        duration_ms=100.0,
        routing_reason="corral: loaded",
    )


async def test_a_replayed_batch_adds_nothing(store: Store) -> None:
    alice = await users.create_user(store, "alice")
    batch = [entry(i, user_id=alice.id) for i in range(5)]
    assert await ledger.record_usage_batch(store, batch) == 5
    assert await ledger.record_usage_batch(store, batch) == 0
    # A replay that overlaps new rows adds only the new ones; repeats inside a batch count once.
    more = [*batch[3:], entry(5, user_id=alice.id), entry(5, user_id=alice.id)]
    assert await ledger.record_usage_batch(store, more) == 1
    totals = await ledger.query_usage(store, group_by="user")
    assert [(t.key, t.requests, t.total_tokens) for t in totals] == [("alice", 6, 90)]
    assert await ledger.record_usage_batch(store, []) == 0


async def test_usage_groups_by_user_model_and_utc_day(store: Store) -> None:
    alice = await users.create_user(store, "alice")
    bob = await users.create_user(store, "bob")
    later = T0 + timedelta(hours=1)  # past midnight UTC: the next day
    await ledger.record_usage_batch(
        store,
        [
            entry(1, user_id=alice.id),
            entry(2, user_id=alice.id, model="llama", at=later),
            entry(3, user_id=bob.id, at=later),
            entry(4, user_id=None, at=later),  # anonymous (auth off)
        ],
    )
    by_model = await ledger.query_usage(store, group_by="model")
    assert [(t.key, t.requests) for t in by_model] == [("llama", 1), ("qwen", 3)]
    by_day = await ledger.query_usage(store, group_by="day")
    assert [(t.key, t.requests) for t in by_day] == [("2026-03-01", 1), ("2026-03-02", 3)]
    by_user = {t.key: t.requests for t in await ledger.query_usage(store, group_by="user")}
    assert by_user == {"alice": 2, "bob": 1, None: 1}
    alices = await ledger.query_usage(store, group_by="model", user="alice", since=later)
    assert [(t.key, t.prompt_tokens, t.completion_tokens) for t in alices] == [("llama", 10, 5)]
    assert await ledger.query_usage(store, user="nobody") == []
    assert await ledger.tokens_used(store, alice.id, T0) == 30
    assert await ledger.tokens_used(store, alice.id, T0, later) == 15


async def test_times_come_back_in_utc(store: Store) -> None:
    from sqlalchemy import select

    from corral.adapters.store.schema import UsageRow

    plus_two = datetime(2026, 3, 2, 1, 30, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=2))
    )
    await ledger.record_usage_batch(store, [entry(1, user_id=None, at=plus_two)])
    async with store.read() as session:
        stored = await session.scalar(select(UsageRow.time))
    assert stored == plus_two and stored.tzinfo == UTC


async def test_bad_usage_rows_and_ranges_are_refused(store: Store) -> None:
    good = entry(1, user_id=None)
    for bad in (
        replace(good, request_id=""),
        replace(good, prompt_tokens=-1),
        replace(good, time=datetime(2026, 1, 1)),
    ):
        with pytest.raises(BadRequest):
            await ledger.record_usage_batch(store, [bad, entry(2, user_id=None)])
    assert await ledger.query_usage(store) == []  # nothing half-written
    with pytest.raises(BadRequest):
        await ledger.query_usage(store, since=T0, until=T0 - timedelta(days=1))
    with pytest.raises(BadRequest):
        await ledger.query_usage(store, since=datetime(2026, 1, 1))
    with pytest.raises(BadRequest):
        await ledger.query_usage(store, limit=5000)
    with pytest.raises(BadRequest):
        await ledger.query_usage(store, group_by="week")  # type: ignore[arg-type]


async def test_a_gateway_usage_record_becomes_a_row(store: Store) -> None:
    record = UsageRecord(
        request_id="gw-1",
        endpoint="/v1/chat/completions",
        dialect="openai",
        model="qwen",
        backend="gpu1",
        status=200,
        started_at=T0.timestamp(),
        duration_s=1.5,
        ttfb_s=0.25,
        prompt_tokens=None,
        completion_tokens=7,
        usage_estimated=True,
        tenant="team-a",
        route_reason="corral: loaded",
    )
    row = usage_entry(record, key_prefix="abcd1234", dialect_out="ollama")
    assert (row.time, row.prompt_tokens, row.ttft_ms, row.duration_ms) == (T0, 0, 250.0, 1500.0)
    assert row.tenant == "team-a" and row.tokens_estimated
    assert await ledger.record_usage_batch(store, [row]) == 1


async def test_a_large_batch_is_written_whole(store: Store) -> None:
    batch = [entry(i, user_id=None) for i in range(2500)]
    assert await ledger.record_usage_batch(store, batch) == 2500
    assert await ledger.record_usage_batch(store, batch[::2]) == 0
    [total] = await ledger.query_usage(store, group_by="model")
    assert (total.requests, total.prompt_tokens) == (2500, 25_000)


async def test_concurrent_writers_all_land(store: Store) -> None:
    import asyncio

    from corral.adapters.store import quota

    made = await asyncio.gather(*(users.create_user(store, f"u{i}") for i in range(20)))
    start, end = quota.period_bounds("day", T0)
    # Twenty charges race to open the same period: one inserts, the rest add to it.
    totals = await asyncio.gather(
        *(quota.charge_period(store, made[0].id, start, end, 10) for _ in range(20))
    )
    assert max(totals) == 200 and sorted(totals) == list(range(10, 201, 10))
    assert await quota.period_used(store, made[0].id, start) == 200
    assert (await users.list_users(store)).items.__len__() == 20


async def test_amended_counts_replace_the_rows_and_replays_change_nothing(store: Store) -> None:
    first = replace(entry(1, user_id=None), tokens_estimated=True, tokens_source="estimated")
    assert await ledger.record_usage_batch(store, [first]) == 1
    counted = replace(
        first,
        prompt_tokens=40,
        completion_tokens=8,
        tokens_estimated=False,
        tokens_source="tokenized",
    )
    # Applied, then replayed after a crash: the original line first, then the amendment.
    for _ in range(2):
        await ledger.record_usage_batch(store, [first])
        assert await ledger.amend_usage_counts(store, [counted]) == 1
    totals = await ledger.query_usage(store, group_by="model")
    assert [(t.requests, t.prompt_tokens, t.completion_tokens) for t in totals] == [(1, 40, 8)]
    # An amendment whose row never arrived is the row.
    lone = replace(counted, request_id="req-lost")
    assert await ledger.amend_usage_counts(store, [lone]) == 1
    totals = await ledger.query_usage(store, group_by="model")
    assert [(t.requests, t.prompt_tokens) for t in totals] == [(2, 80)]
    assert await ledger.amend_usage_counts(store, []) == 0
