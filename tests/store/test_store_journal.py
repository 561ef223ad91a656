"""The usage journal: append, rotate, checkpoint, replay, torn lines; idempotent on both engines."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import func, select

from corral.adapters.store import Store, usage_log, users
from corral.adapters.store.journal import Journal, JournalBusy, Position
from corral.adapters.store.schema import UsageRow
from corral.adapters.store.usage_log import UsageLog
from corral.core.usage import UsageRecord


def record(n: int, user: str | None = None) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{n}",
        endpoint="/api/chat",
        dialect="ollama",
        model="qwen",
        backend="gpu1",
        status=200,
        started_at=1_770_000_000.0 + n,
        duration_s=0.25,
        ttfb_s=0.05,
        prompt_tokens=10,
        completion_tokens=n,
        route_reason="corral: loaded",
        user=user,
        key_prefix="abcd1234" if user else None,
    )


async def rows(store: Store) -> dict[str, int]:
    async with store.read() as session:
        found = await session.execute(
            select(UsageRow.request_id, func.count()).group_by(UsageRow.request_id)
        )
        return {rid: int(n) for rid, n in found.all()}


def test_lines_come_back_in_order_across_segments_and_commit_deletes_old_ones(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, segment_bytes=40)
    journal.open()
    for i in range(30):
        journal.append(b'{"n":%d}\n' % i)
    assert len(journal.segments()) > 3
    lines, after = journal.read(journal.checkpoint, 1000)
    assert lines == [b'{"n":%d}\n' % i for i in range(30)]
    assert after.segment == journal.live_segment
    journal.commit(after)
    assert journal.segments() == [journal.live_segment]
    assert journal.read(after, 10) == ([], after)
    journal.close()


def test_a_batch_stops_at_max_lines_and_the_next_read_goes_on(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    for i in range(5):
        journal.append(b"%d\n" % i)
    first, middle = journal.read(journal.checkpoint, 3)
    rest, _ = journal.read(middle, 3)
    assert (first, rest) == ([b"0\n", b"1\n", b"2\n"], [b"3\n", b"4\n"])
    journal.close()


def test_a_line_being_written_is_left_for_the_next_read(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.append(b"a\n")
    with open(tmp_path / f"usage-{journal.live_segment:08d}.jsonl", "ab") as file:
        file.write(b"half")  # as if caught mid-write
    lines, after = journal.read(journal.checkpoint, 10)
    assert lines == [b"a\n"] and after.offset == 2
    journal.close()


def test_a_synced_rotated_segment_is_closed(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=4)
    journal.open()
    journal.append(b"12345\n")  # rotates: the old descriptor waits for its last sync
    targets, retired = journal.begin_sync()
    assert len(retired) == 1 and set(retired) <= set(targets)
    journal.sync(targets)
    journal.end_sync(retired)
    assert journal.begin_sync() == ([], [])  # nothing written since
    journal.close()


def test_a_restart_reads_only_what_follows_the_checkpoint(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    first.open()
    for i in range(4):
        first.append(b"%d\n" % i)
    _, after_two = first.read(first.checkpoint, 2)
    first.commit(after_two)
    first.close()

    again = Journal(tmp_path)
    again.open()
    assert again.checkpoint == after_two
    assert again.live_segment == after_two.segment + 1  # never appends to an old segment
    again.append(b"4\n")
    assert again.read(again.checkpoint, 10)[0] == [b"2\n", b"3\n", b"4\n"]
    again.close()


def test_a_torn_last_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crashed = Journal(tmp_path)
    crashed.open()
    crashed.append(b'{"n":1}\n')
    segment = crashed.live_segment
    crashed.close()
    with open(tmp_path / f"usage-{segment:08d}.jsonl", "ab") as file:
        file.write(b'{"n":2,"hal')  # the process died mid-write

    journal = Journal(tmp_path)
    journal.open()
    journal.append(b'{"n":3}\n')
    with caplog.at_level(logging.WARNING, "corral.journal"):
        lines, after = journal.read(journal.checkpoint, 10)
    assert lines == [b'{"n":1}\n', b'{"n":3}\n']
    assert "torn last line" in caplog.text
    journal.commit(after)
    assert journal.segments() == [journal.live_segment]
    journal.close()


def test_a_second_process_cannot_open_the_same_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    with pytest.raises(JournalBusy):
        Journal(tmp_path).open()
    journal.close()
    again = Journal(tmp_path)
    again.open()  # free again once closed
    again.close()


def test_a_checkpoint_never_moves_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.commit(Position(journal.live_segment, 0))
    with pytest.raises(ValueError):
        journal.commit(Position(0, 0))
    journal.close()


async def test_the_log_writes_one_row_per_record_and_names_users(
    store: Store, tmp_path: Path
) -> None:
    alice = await users.create_user(store, "alice")
    log = UsageLog(store, Journal(tmp_path / "journal"), batch_max=7)
    await log.start()
    for i in range(20):
        log.append(record(i, user="alice" if i % 2 else None), "ollama")
    await log.stop()
    assert await rows(store) == {f"req-{i}": 1 for i in range(20)}
    async with store.read() as session:
        row = await session.scalar(select(UsageRow).where(UsageRow.request_id == "req-3"))
    assert row is not None
    assert (row.user_id, row.key_prefix, row.dialect_out, row.completion_tokens) == (
        alice.id,
        "abcd1234",
        "ollama",
        3,
    )


async def test_a_crash_between_commit_and_checkpoint_replays_without_duplicates(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "journal"
    log = UsageLog(store, Journal(directory))
    await log.start()
    for i in range(10):
        log.append(record(i))

    def crash(_position: Position) -> None:
        raise OSError("killed before the checkpoint was written")

    monkeypatch.setattr(log.journal, "commit", crash)
    with pytest.raises(OSError):
        await log.commit_batch()  # the rows are committed, the checkpoint is not
    assert len(await rows(store)) == 10
    log.journal.close()
    monkeypatch.undo()

    again = UsageLog(store, Journal(directory))
    await again.start()  # replays all ten: the database already has them
    again.append(record(10))
    await again.stop()
    assert await rows(store) == {f"req-{i}": 1 for i in range(11)}
    assert again.committed == 1


async def test_rows_wait_in_the_journal_while_the_store_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    await store.upgrade()
    real = usage_log.record_usage_batch
    outage = {"left": 3}

    async def flaky(target: Store, entries: list[object], audits: list[object]) -> int:
        if outage["left"]:
            outage["left"] -= 1
            raise ConnectionError("database unreachable")
        return await real(target, entries, audits)  # type: ignore[arg-type]

    monkeypatch.setattr(usage_log, "record_usage_batch", flaky)
    log = UsageLog(store, Journal(tmp_path / "journal"), batch_s=0.02, sync_s=0.01)
    try:
        await log.start()  # the replay fails too: start goes on regardless
        for i in range(50):
            log.append(record(i))  # never waits for the store
        for _ in range(500):
            if log.committed == 50:
                break
            await asyncio.sleep(0.01)
        assert log.committed == 50 and log.failures == 0
        await log.stop()
        assert await rows(store) == {f"req-{i}": 1 for i in range(50)}
    finally:
        await store.close()


async def test_a_failing_journal_write_loses_the_row_not_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    journal = Journal(tmp_path / "journal")
    log = UsageLog(store, journal)

    def full_disk(_line: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "append", full_disk)
    try:
        with caplog.at_level(logging.ERROR, "corral.ledger"):
            log.append(record(1))
        assert log.lost == 1 and "usage journal write failed" in caplog.text
    finally:
        await store.close()


def test_rotate_finishes_the_live_segment_and_the_next_commit_deletes_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    first = journal.live_segment
    assert not journal.rotate()  # nothing in it: no new segment
    journal.append(b"a\n")
    assert journal.rotate() and journal.live_segment == first + 1
    lines, after = journal.read(journal.checkpoint, 10)
    assert lines == [b"a\n"] and after == Position(first + 1, 0)
    journal.commit(after)
    assert journal.segments() == [first + 1]
    journal.close()


def test_a_read_stops_at_its_byte_budget_but_takes_at_least_one_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    for size in (10, 10, 30, 10):
        journal.append(b"x" * (size - 1) + b"\n")
    first, after = journal.read(journal.checkpoint, 100, max_bytes=15)
    assert [len(line) for line in first] == [10, 10]  # the second line crossed 15 bytes
    big, after = journal.read(after, 100, max_bytes=5)
    assert [len(line) for line in big] == [30]  # one line even over the budget
    rest, _ = journal.read(after, 100, max_bytes=1000)
    assert [len(line) for line in rest] == [10]
    journal.close()


async def test_a_drain_commits_every_byte_capped_batch(store: Store, tmp_path: Path) -> None:
    log = UsageLog(store, Journal(tmp_path / "journal"), batch_bytes=600)
    await log.start()
    for i in range(20):
        log.append(record(i))
    await log.stop()  # each batch holds a line or two; the drain goes on to the end
    assert await rows(store) == {f"req-{i}": 1 for i in range(20)}


async def test_an_amendment_updates_its_row_in_the_same_batch_or_a_later_one(
    store: Store, tmp_path: Path
) -> None:
    directory = tmp_path / "journal"
    log = UsageLog(store, Journal(directory))
    await log.start()
    early, late = record(1), record(2)
    for rec in (early, late):
        rec.usage_estimated, rec.usage_source = True, "estimated"
        log.append(rec, "openai")
    early.prompt_tokens, early.completion_tokens = 31, 7  # the tokenizer's count
    early.usage_estimated, early.usage_source = False, "tokenized"
    log.append(early, "openai", amend=True)  # in the same batch as its row
    await log.commit_batch()
    late.prompt_tokens, late.completion_tokens = 44, 9
    late.usage_estimated, late.usage_source = False, "tokenized"
    log.append(late, "openai", amend=True)  # after its row is in the database
    await log.stop()
    assert await rows(store) == {"req-1": 1, "req-2": 1}
    async with store.read() as session:
        got = (await session.scalars(select(UsageRow).order_by(UsageRow.request_id))).all()
    assert [
        (r.prompt_tokens, r.completion_tokens, r.tokens_estimated, r.tokens_source) for r in got
    ] == [(31, 7, False, "tokenized"), (44, 9, False, "tokenized")]


async def test_an_amendment_whose_row_was_lost_writes_the_row(store: Store, tmp_path: Path) -> None:
    log = UsageLog(store, Journal(tmp_path / "journal"))
    await log.start()
    rec = record(3)
    rec.usage_source = "tokenized"
    log.append(rec, "openai", amend=True)
    await log.stop()
    assert await rows(store) == {"req-3": 1}
