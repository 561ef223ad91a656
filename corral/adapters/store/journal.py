"""An append-only journal of lines in numbered segment files, with a commit checkpoint.

The usage ledger writes each finished request here first (one buffered ``write``, no
fsync) and a background task copies what follows the checkpoint into the database.
Layout of the journal directory::

    usage-00000001.jsonl   segments, one line per entry, oldest first
    usage-00000002.jsonl   the segment this process appends to (always a new one)
    checkpoint             {"segment": 2, "offset": 4096}: all before it is committed
    lock                   held (flock) while a process owns the journal

Durability: each line is one ``write`` call straight into the OS page cache (no
buffer in the process), so a process crash, even SIGKILL, loses nothing appended:
the kernel still writes the page cache to disk. The writer's task fdatasyncs the
live segment every ~100 ms in a worker thread, so a machine crash or power loss can
lose at most the lines of that last interval (plus the sync in flight). An fsync per
line would put a disk round trip on every request; one per interval costs the same
whatever the load.

A crash mid-write leaves a torn last line (no newline); readers skip it with a
warning. Each process starts a fresh segment, so it never appends to a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import IO, NamedTuple

__all__ = ["Journal", "JournalBusy", "Position"]

log = logging.getLogger("corral.journal")

_PREFIX = "usage-"
_SUFFIX = ".jsonl"
_CHUNK = 1 << 20  # bytes read at a time when catching up


class JournalBusy(Exception):
    """Another process holds the journal (two gateways on one data directory)."""


class Position(NamedTuple):
    """A place in the journal: a segment number and a byte offset inside it."""

    segment: int
    offset: int


class Journal:
    """Segments of lines in ``directory``; `open` it, `append`, `read` and `commit`.

    Appends and `begin_sync`/`end_sync` belong to the event loop's thread; `sync`,
    `read` and `commit` may run in a worker thread (the readers open files of their own).
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 8 << 20,
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.checkpoint = Position(0, 0)
        self.appended = 0  # lines appended by this process
        self._segment = 0  # the segment being appended to; 0 = not open
        self._fd = -1
        self._size = 0
        self._dirty = False  # written since the last sync
        self._retired: list[int] = []  # rotated-out segments awaiting their last sync
        self._lock: IO[bytes] | None = None

    # -- the writer ---------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, read the checkpoint and start a new segment."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = open(self.directory / "lock", "ab")  # noqa: SIM115 - held until close
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise JournalBusy(f"{self.directory} is in use by another process") from None
        self._lock = lock
        self.checkpoint = self._read_checkpoint()
        newest = max(self.segments(), default=0)
        self._open_segment(max(newest, self.checkpoint.segment) + 1)

    def append(self, line: bytes) -> None:
        """Add one line (``line`` ends with a newline): one ``write`` call, no fsync."""
        if self._fd < 0:
            raise RuntimeError("the journal is not open")
        # O_APPEND and a single write: the line reaches the kernel whole or (on a
        # crash mid-call) torn at the end, never interleaved with another line.
        os.write(self._fd, line)
        self.appended += 1
        self._size += len(line)
        self._dirty = True
        if self._size >= self.segment_bytes:
            self._open_segment(self._segment + 1)

    def rotate(self) -> bool:
        """Start a new segment if the live one holds lines; True when it did.

        The old segment is then finished, and deleted by the first commit past it: how
        the request audit keeps prompts from lingering in a quiet gateway's live
        segment for longer than a purge interval.
        """
        if self._fd < 0 or self._size == 0:
            return False
        self._open_segment(self._segment + 1)
        return True

    def begin_sync(self) -> tuple[list[int], list[int]]:
        """File descriptors to fdatasync now, and the retired ones among them.

        The caller syncs them (`sync`, in a worker thread) and then hands the retired
        ones to `end_sync`, which closes them: a descriptor is never closed while a
        sync may still use it, so its number cannot be reused meanwhile.
        """
        retired, self._retired = self._retired, []
        targets = list(retired)
        if self._dirty and self._fd >= 0:
            targets.append(self._fd)
            self._dirty = False
        return targets, retired

    @staticmethod
    def sync(fds: list[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):  # a disk error shows on the next write
                os.fdatasync(fd)

    @staticmethod
    def end_sync(retired: list[int]) -> None:
        for fd in retired:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Sync and close every segment; release the lock."""
        targets, retired = self.begin_sync()
        self.sync(targets)
        self.end_sync(retired)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._segment = 0
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    @property
    def live_segment(self) -> int:
        return self._segment

    def _open_segment(self, number: int) -> None:
        if self._fd >= 0:
            self._retired.append(self._fd)  # synced and closed by the next sync
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        # Exclusive create: a segment is only ever written by the process that made it.
        self._fd = os.open(self._path(number), flags, 0o600)
        self._size = 0
        self._segment = number

    # -- the reader ---------------------------------------------------------------------

    def segments(self) -> list[int]:
        """Numbers of the segment files present, oldest first."""
        found = []
        for path in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            digits = path.name[len(_PREFIX) : -len(_SUFFIX)]
            if digits.isdigit():
                found.append(int(digits))
        return sorted(found)

    def read(
        self, start: Position, max_lines: int, max_bytes: int | None = None
    ) -> tuple[list[bytes], Position]:
        """Up to ``max_lines`` complete lines after ``start`` (and, given ``max_bytes``,
        no more bytes than that but at least one line), and the position after them.

        A finished segment (not the one being appended to) whose end lacks a newline
        was torn by a crash: that tail is skipped with a warning. In the live segment
        an incomplete tail is a write still in progress, left for the next read.
        """
        lines: list[bytes] = []
        size = 0
        budget = max_bytes if max_bytes is not None else float("inf")
        position = start
        for number in self.segments():
            if number < position.segment:
                continue
            if number > position.segment:
                position = Position(number, 0)
            # Decide whether the segment is finished *before* reading it: a segment
            # closed after this check was written whole, so its tail is never torn.
            live = number == self._segment
            got, offset, torn = self._read_segment(
                number, position.offset, max_lines - len(lines), budget - size
            )
            lines.extend(got)
            size += sum(len(line) for line in got)
            position = Position(number, offset)
            if len(lines) >= max_lines or size >= budget:
                return lines, position
            if live:
                return lines, position
            if torn:
                log.warning(
                    "usage journal %s: skipped %d bytes of a torn last line (a crash mid-write)",
                    self._path(number).name,
                    torn,
                )
            # A finished segment read to its end: continue with the next one.
        return lines, position

    def _read_segment(
        self, number: int, offset: int, want: int, budget: float
    ) -> tuple[list[bytes], int, int]:
        """Complete lines from ``offset``, stopping at ``want`` lines or once ``budget``
        bytes are taken; the offset after them; bytes of a torn tail left over."""
        lines: list[bytes] = []
        taken = 0
        try:
            file = open(self._path(number), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return lines, offset, 0
        with file:
            file.seek(offset)
            pending = b""
            while True:
                chunk = file.read(_CHUNK)
                if not chunk:
                    break
                parts = (pending + chunk).split(b"\n")
                pending = parts.pop()
                for part in parts:
                    if len(lines) == want or (lines and taken >= budget):
                        # Stop here; the rest is read next time from the new offset.
                        return lines, offset, 0
                    offset += len(part) + 1
                    if part:
                        lines.append(part + b"\n")
                        taken += len(part) + 1
            # The end of the file: what is left without a newline is a torn tail.
            if len(lines) == want or (lines and taken >= budget):
                return lines, offset, 0
            return lines, offset, len(pending)

    # -- the checkpoint -----------------------------------------------------------------

    def commit(self, position: Position) -> None:
        """Record that everything before ``position`` is in the database.

        Written to a temporary file and renamed over the old one, so a crash leaves
        either checkpoint, never half of one. Not fsynced: a lost checkpoint only
        means replaying lines the database already has, which adds nothing. Segments
        wholly before ``position`` are then deleted.
        """
        if position < self.checkpoint:
            raise ValueError(f"checkpoint {position} is behind {self.checkpoint}")
        temporary = self.directory / "checkpoint.tmp"
        temporary.write_text(json.dumps({"segment": position.segment, "offset": position.offset}))
        os.replace(temporary, self.directory / "checkpoint")
        self.checkpoint = position
        for number in self.segments():
            if number >= position.segment or number == self._segment:
                break
            with contextlib.suppress(FileNotFoundError):
                self._path(number).unlink()

    def _read_checkpoint(self) -> Position:
        path = self.directory / "checkpoint"
        try:
            saved = json.loads(path.read_text())
            return Position(int(saved["segment"]), int(saved["offset"]))
        except FileNotFoundError:
            return Position(0, 0)
        except (ValueError, KeyError, TypeError):
            # Replaying from the oldest segment is safe: the database skips what it has.
            log.warning("usage journal checkpoint %s is unreadable; replaying every segment", path)
            return Position(0, 0)

    def _path(self, number: int) -> Path:
        return self.directory / f"{_PREFIX}{number:08d}{_SUFFIX}"
