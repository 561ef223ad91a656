"""The gateway's recent log records, kept in memory for ``GET /admin/logs``.

A logging handler on the root logger appends each record that passes the loggers'
levels (``log_level``) to a bounded deque; the oldest fall off. The message is
formatted when the record is taken, so the buffer holds no references to request
objects or exceptions.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

__all__ = ["LEVELS", "LogBuffer", "LogEntry"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class LogEntry:
    time: float  # seconds since the epoch
    level: str  # lowercase: debug, info, warning, error, critical
    levelno: int
    logger: str
    message: str


class LogBuffer(logging.Handler):
    """The last ``capacity`` records (0 keeps none)."""

    def __init__(self, capacity: int) -> None:
        super().__init__(logging.NOTSET)
        self.records: deque[LogEntry] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        return self.records.maxlen or 0

    def resize(self, capacity: int) -> None:
        """Keep the newest ``capacity`` records from now on."""
        if capacity != self.capacity:
            self.records = deque(self.records, maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.records.maxlen:
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                message += f" ({record.exc_info[0].__name__}: {record.exc_info[1]})"
        except Exception:  # a record whose arguments do not format: keep what we can
            message = str(record.msg)
        self.records.append(
            LogEntry(record.created, record.levelname.lower(), record.levelno, record.name, message)
        )

    def recent(
        self, *, limit: int, min_level: int = logging.NOTSET, logger: str | None = None
    ) -> list[LogEntry]:
        """The newest records at ``min_level`` or above (from ``logger`` and its
        children, if named), oldest first, at most ``limit``."""
        out: list[LogEntry] = []
        for entry in reversed(self.records):
            if entry.levelno < min_level:
                continue
            if logger and entry.logger != logger and not entry.logger.startswith(logger + "."):
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        out.reverse()
        return out
