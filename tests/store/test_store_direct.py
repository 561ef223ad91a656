"""The SQLite file's direct writer: one transaction per call, in a thread of its own."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.adapters.store import Store, ledger
from corral.adapters.store.records import UsageEntry
from corral.adapters.store.schema import UsageRow
from corral.core.errors import Conflict

T0 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


def entry(n: int, user_id: int | None = None) -> UsageEntry:
    return UsageEntry(
        request_id=f"req-{n}",
        time=T0,
        model="qwen",
        dialect_in="ollama",
        status=200,
        user_id=user_id,
        prompt_tokens=3,
        completion_tokens=4,
        tokens_estimated=True,
        ttft_ms=12.5,
    )


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    await opened.upgrade()
    yield opened  # type: ignore[misc]
    await opened.close()


def stored(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT request_id, time, tokens_estimated, ttft_ms FROM usage ORDER BY request_id"
        ).fetchall()


async def test_only_a_sqlite_file_has_the_direct_writer(tmp_path: Path) -> None:
    memory = await Store.open("sqlite+aiosqlite://")
    try:
        assert not memory.direct_writes
        with pytest.raises(RuntimeError):
            await memory.write_direct(lambda connection: None)
        await memory.upgrade()
        # The ledger takes the engine's way there, and the rows are in the same database.
        assert await ledger.record_usage_batch(memory, [entry(1)]) == 1
        assert [t.requests for t in await ledger.query_usage(memory)] == [1]
    finally:
        await memory.close()
    on_file = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert on_file.direct_writes
    await on_file.close()


async def test_rows_written_directly_are_stored_as_the_engine_stores_them(
    store: Store, tmp_path: Path
) -> None:
    assert await ledger.record_usage_batch(store, [entry(1)]) == 1
    async with store.write() as session:  # the same row through the ORM
        session.add(
            UsageRow(
                request_id="req-2",
                time=T0,
                model="qwen",
                dialect_in="ollama",
                status=200,
                prompt_tokens=3,
                completion_tokens=4,
                tokens_estimated=True,
                ttft_ms=12.5,
            )
        )
    direct, engine = stored(tmp_path / "corral.db")
    assert direct[1:] == engine[1:]
    assert direct[1] == "2026-03-01 23:30:00.000000"


async def test_a_failed_transaction_leaves_nothing_and_the_next_one_works(
    store: Store, tmp_path: Path
) -> None:
    params = ledger._SQLITE_ADD.params([ledger._check_entry(entry(1))])

    def add_then_fail(connection: sqlite3.Connection) -> None:
        assert ledger._SQLITE_ADD.run(connection, params) == 1
        raise ValueError("changed its mind")

    with pytest.raises(ValueError, match="changed its mind"):
        await store.write_direct(add_then_fail)
    assert stored(tmp_path / "corral.db") == []
    assert await ledger.record_usage_batch(store, [entry(2)]) == 1
    assert [row[0] for row in stored(tmp_path / "corral.db")] == ["req-2"]


async def test_a_foreign_key_clash_is_a_conflict(store: Store, tmp_path: Path) -> None:
    with pytest.raises(Conflict):
        await ledger.record_usage_batch(store, [entry(1), entry(2, user_id=999)])
    assert stored(tmp_path / "corral.db") == []  # the whole batch, not half of it


async def test_a_cancelled_caller_holds_the_write_lock_until_the_transaction_ends(
    store: Store, tmp_path: Path
) -> None:
    params = ledger._SQLITE_ADD.params([ledger._check_entry(entry(1))])

    def slow_add(connection: sqlite3.Connection) -> int:
        time.sleep(0.3)
        return ledger._SQLITE_ADD.run(connection, params)

    writer = asyncio.create_task(store.write_direct(slow_add))
    await asyncio.sleep(0.05)
    writer.cancel()
    await asyncio.sleep(0)
    async with store.write():  # waits for the lock, which the thread's work still holds
        assert [row[0] for row in stored(tmp_path / "corral.db")] == ["req-1"]
    with pytest.raises(asyncio.CancelledError):
        await writer
