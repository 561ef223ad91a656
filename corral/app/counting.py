"""Counting the tokens of answers whose backend reported none, with its own tokenizer.

A stream cut short (the client left, the backend died) or an engine that omits usage
leaves a request without counts. The relay then records an estimate (about 4
characters a token, flagged ``estimated``) and, for a backend that may have a
tokenizer, leaves a `CountJob`: what it sent and the answer text it relayed. After the
request's usage record is written, `TokenCounter` asks the backend's tokenizer (see
corral/adapters/tokenizer.py) in a background task and, when it answers, amends that
record: the counts, ``usage_source = "tokenized"``. The client never waits for it, the
request path does no I/O for it, and the record is written once and amended once, so
every request still has exactly one usage row.

Bounded: one tokenizer call at a time per ``concurrency``, at most ``max_pending``
waiting (more are left estimated), each request's calls within
``usage.tokenize_timeout_s``, and only texts within ``usage.tokenize_max_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.adapters.tokenizer import Prompt, Tokenizers
from corral.core.usage import UsageRecord

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["CountJob", "TokenCounter"]

log = logging.getLogger("corral.counting")


@dataclass(slots=True)
class CountJob:
    """What to count for one request: the upstream request and the relayed answer."""

    backend: str
    model: str  # as the backend knows it
    path: str  # the upstream path (OpenAI dialect)
    body: bytes  # the upstream request body
    answer: Callable[[], str | None]  # the answer's text; None when too long to count


class TokenCounter:
    """The gateway's background counter of tokens for records that came without."""

    def __init__(
        self,
        gw: Gateway,
        *,
        timeout_s: float,
        concurrency: int = 4,
        max_pending: int = 256,
    ) -> None:
        self.gw = gw
        self.tokenizers = Tokenizers(timeout_s=timeout_s)
        self.max_pending = max_pending
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.counted = 0  # records amended with the tokenizer's counts
        self.skipped = 0  # jobs left estimated: too many waiting, no tokenizer, a failure

    @property
    def busy(self) -> bool:
        """Whether counts are under way (or waiting)."""
        return bool(self._tasks)

    def may_count(self, backend: str) -> bool:
        """Whether an answer from ``backend`` is worth keeping to count: tokenizing is
        on and the backend is not known to lack a tokenizer."""
        return self.tokenizers.flavour(backend) != "none"

    def submit(self, record: UsageRecord, job: CountJob) -> None:
        """Count ``job`` in the background and amend ``record`` (already written)."""
        if len(self._tasks) >= self.max_pending:
            self.skipped += 1
            return
        task = asyncio.get_running_loop().create_task(self._count(record, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _count(self, record: UsageRecord, job: CountJob) -> None:
        async with self._slots:
            transport = self.gw.fleet.transports.get(job.backend)
            prompt = Prompt.of_request(job.path, job.body)
            answer = job.answer()
            counts = None
            if transport is not None and prompt is not None and answer is not None:
                counts = await self.tokenizers.count(
                    job.backend, transport, job.model, prompt, answer
                )
        if counts is None:
            self.skipped += 1
            return
        record.prompt_tokens, record.completion_tokens = counts
        record.usage_estimated = False
        record.usage_source = "tokenized"
        self.counted += 1
        self.gw.amend(record)

    async def drain(self, timeout_s: float) -> None:
        """Let the counts under way finish (bounded), for a clean stop."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.info("stopped with %d token counts unfinished; they stay estimated", len(pending))
