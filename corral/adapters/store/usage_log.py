"""The usage ledger's writer: journal each finished request, batch the journal into SQL.

The request path only encodes one line and writes it to the journal. A task
fdatasyncs the journal every ``sync_s`` (in a worker thread), and every ``batch_s`` (sooner when
``batch_max`` lines wait) reads what follows the checkpoint, writes it with the
idempotent `record_usage_batch`, then moves the checkpoint. Start-up replays what
a previous process journaled but never committed; `stop` commits the rest.

When the database is away, lines wait in the journal and the task retries with a
backoff doubling up to ``max_backoff_s``; requests never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import msgspec
from sqlalchemy import select

from corral.adapters.store.db import Store
from corral.adapters.store.journal import Journal, Position
from corral.adapters.store.ledger import amend_usage_counts, record_usage_batch
from corral.adapters.store.records import UsageEntry, usage_entry
from corral.adapters.store.request_audit import (
    ContentLine,
    RequestAuditEntry,
    request_audit_entry,
)
from corral.adapters.store.schema import UserRow
from corral.core.errors import BadRequest
from corral.core.usage import UsageRecord

__all__ = ["UsageLine", "UsageLog"]

log = logging.getLogger("corral.ledger")

_SLICE = 100  # rows per transaction within a batch


class UsageLine(msgspec.Struct, omit_defaults=True):
    """One journal line: the gateway's record, the dialect the backend spoke, and what
    the request audit keeps of it (``audit.content``), which becomes its own row.

    ``amend``: the record was written before and now has better counts (the backend's
    tokenizer counted what it had not reported); its row is updated, not added.
    """

    record: UsageRecord
    dialect_out: str | None = None
    content: ContentLine | None = None
    amend: bool = False


class UsageLog:
    """The journal, the batching task and the store it writes to."""

    def __init__(
        self,
        store: Store,
        journal: Journal,
        *,
        batch_s: float = 0.5,
        batch_max: int = 500,
        batch_bytes: int = 16 << 20,
        sync_s: float = 0.1,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.store = store
        self.journal = journal
        self.batch_s = batch_s
        self.batch_max = batch_max
        # Lines with request content (audit.content full) can be large: a batch also
        # stops at this many bytes, so one never holds hundreds of megabytes.
        self.batch_bytes = batch_bytes
        self.sync_s = sync_s
        self.max_backoff_s = max_backoff_s
        self.committed = 0  # rows this process added to the database
        self.failures = 0  # failed batch writes in a row (0 = healthy)
        self.lost = 0  # records the journal could not take (disk full)
        self._position = Position(0, 0)
        self._read_up_to = 0  # journal.appended when the last read began
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(UsageLine).decode
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one batch at a time: the task, or stop's drain

    def append(
        self,
        record: UsageRecord,
        dialect_out: str | None = None,
        content: ContentLine | None = None,
        *,
        amend: bool = False,
    ) -> None:
        """The hot path: one encode, one ``write`` call."""
        try:
            line = UsageLine(record, dialect_out, content, amend)
            self.journal.append(self._encode(line) + b"\n")
        except OSError as exc:  # a full or failing disk: the request itself went fine
            self.lost += 1
            if self.lost == 1 or self.lost % 1000 == 0:
                log.error("usage journal write failed, %d rows lost so far: %s", self.lost, exc)

    async def start(self) -> None:
        """Open the journal, replay what was not committed, then batch in the background."""
        await asyncio.to_thread(self.journal.open)
        self._position = self.journal.checkpoint
        try:
            replayed = await self.drain()
        except Exception as exc:  # the database is away: the task keeps trying
            log.warning("usage journal replay postponed: %s", exc)
            self.failures = 1
        else:
            if replayed:
                log.warning("usage journal: replayed %d rows not committed before", replayed)
        self._task = asyncio.create_task(self._run())

    async def stop(self, *, attempts: int = 3) -> None:
        """Commit everything in the journal (a few tries), then sync and close it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for attempt in range(attempts):
            try:
                await self.drain()
                break
            except Exception as exc:
                if attempt + 1 == attempts:
                    log.error("usage rows stay in the journal until the next start: %s", exc)
                else:
                    await asyncio.sleep(0.2 * 2**attempt)
        self.journal.close()

    async def drain(self) -> int:
        """Commit batches until the journal has nothing after the checkpoint."""
        total = 0
        while True:
            added, _, full = await self._commit_batch()
            total += added
            if not full:
                return total

    async def commit_batch(self) -> tuple[int, int]:
        """Write the next batch and move the checkpoint; (rows added, lines read)."""
        added, lines, _ = await self._commit_batch()
        return added, lines

    async def _commit_batch(self) -> tuple[int, int, bool]:
        # (rows added, lines read, whether the batch was full: more may be waiting)
        async with self._lock:
            self._read_up_to = self.journal.appended
            raw, after = await asyncio.to_thread(
                self.journal.read, self._position, self.batch_max, self.batch_bytes
            )
            if after == self._position:
                return 0, 0, False
            added = 0
            # In slices, one transaction each: decoding, building and preparing rows holds
            # the event loop (and so every open stream) for as long as they take, ~5 ms
            # per 300 rows here. A crash between slices is harmless: the replay skips the
            # rows already in, and an amendment never precedes its row in the journal.
            for start in range(0, len(raw), _SLICE):
                entries = self._entries(raw[start : start + _SLICE])
                added += await self._write(entries) if entries else 0
            # Moving the checkpoint after the commit: a crash between the two replays
            # this batch, and the database skips rows it already has.
            await asyncio.to_thread(self.journal.commit, after)
            self._position = after
            self.committed += added
            full = len(raw) >= self.batch_max or sum(map(len, raw)) >= self.batch_bytes
            return added, len(raw), full

    def _entries(self, raw: Sequence[bytes]) -> list[UsageLine]:
        lines = []
        for line in raw:
            try:
                lines.append(self._decode(line))
            except msgspec.DecodeError as exc:  # torn or damaged by a crash
                log.warning("usage journal: skipped an unreadable line (%s): %.80r", exc, line)
        return lines

    async def _write(self, lines: list[UsageLine]) -> int:
        names = {line.record.user for line in lines if line.record.user is not None}
        ids = await self._user_ids(names) if names else {}

        def entry(line: UsageLine) -> UsageEntry:
            return usage_entry(
                line.record,
                user_id=ids.get(line.record.user) if line.record.user else None,
                key_prefix=line.record.key_prefix,
                dialect_out=line.dialect_out,
            )

        pairs = [
            (
                entry(line),
                None if line.content is None else request_audit_entry(line.record, line.content),
            )
            for line in lines
            if not line.amend
        ]
        amends = [entry(line) for line in lines if line.amend]
        try:
            added = await record_usage_batch(
                self.store,
                [entry for entry, _ in pairs],
                [audit for _, audit in pairs if audit is not None],
            )
        except BadRequest:
            added = await self._write_one_by_one(pairs)
        if amends:  # after the rows they amend, which may be in this same batch
            try:
                await amend_usage_counts(self.store, amends)
            except BadRequest as exc:
                log.error("usage amendments refused and dropped: %s", exc)
        return added

    async def _write_one_by_one(
        self, pairs: list[tuple[UsageEntry, RequestAuditEntry | None]]
    ) -> int:
        # A row the store refuses must not block the rows behind it forever.
        added = 0
        for entry, audit in pairs:
            try:
                added += await record_usage_batch(self.store, [entry], [audit] if audit else [])
            except BadRequest as exc:
                log.error("usage row %s refused and dropped: %s", entry.request_id, exc)
        return added

    async def _user_ids(self, names: set[str]) -> dict[str, int]:
        # The journal names users; rows point at their ids. A user deleted meanwhile
        # leaves the row without one, as deleting a user does to their older rows.
        async with self.store.read() as session:
            rows = await session.execute(
                select(UserRow.name, UserRow.id).where(UserRow.name.in_(names))
            )
            return {name: user_id for name, user_id in rows.all()}

    async def _sync(self) -> None:
        targets, retired = self.journal.begin_sync()
        if targets:
            await asyncio.to_thread(self.journal.sync, targets)
        self.journal.end_sync(retired)

    async def _run(self) -> None:
        last_batch = time.monotonic()
        backoff = self.batch_s
        while True:
            await asyncio.sleep(self.sync_s)
            await self._sync()
            now = time.monotonic()
            waiting = self.journal.appended - self._read_up_to
            due = now - last_batch >= (backoff if self.failures else self.batch_s)
            if not due and waiting < self.batch_max:
                continue
            if self.failures and not due:
                continue  # backing off: a full batch does not cut the pause short
            last_batch = now
            try:
                await self.drain()
            except Exception as exc:
                self.failures += 1
                backoff = min(self.max_backoff_s, self.batch_s * 2**self.failures)
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning(
                        "usage journal: writing to the store failed (%d in a row, next try "
                        "in %.1f s); rows wait in the journal: %s",
                        self.failures,
                        backoff,
                        exc,
                    )
            else:
                if self.failures:
                    log.warning("usage journal: the store is back; rows caught up")
                self.failures = 0
                backoff = self.batch_s
