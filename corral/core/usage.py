"""The per-request usage record: what was asked, where it went, what it cost."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["UsageRecord", "UsageSource"]

# How a record's token counts were had: from the backend's answer, from the backend's
# tokenizer afterwards (the answer carried none), or estimated (about 4 characters a token).
UsageSource = Literal["reported", "tokenized", "estimated"]


class UsageRecord(msgspec.Struct, gc=False):
    """One finished request. Token counts are None when the backend gave none.

    A msgspec struct outside the cyclic collector (``gc=False``; it holds only strings,
    numbers and None): the gateway keeps the last 10,000 of them, and while that ring
    fills, tracked records would set off collections that walk every open stream.
    Built in C, too, once a request.
    """

    request_id: str
    endpoint: str
    dialect: str
    model: str
    backend: str | None
    status: int
    started_at: float
    duration_s: float
    ttfb_s: float | None = None
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_estimated: bool = False  # counted by Corral (about 4 chars a token), not the backend
    usage_source: UsageSource | None = None  # None: no counts (nothing was answered)
    load_duration_s: float | None = None
    attempts: int = 0
    error: str | None = None
    client_gone: bool = False
    tenant: str = ""
    route_reason: str | None = None  # the scheduler's decision: policy and why
    queued_s: float = 0.0  # time spent in the fair queue before a backend was free
    user: str | None = None  # the API key's user (None: auth off, or CORRAL_ADMIN_KEY)
    key_prefix: str | None = None  # the key's visible prefix ("env" for CORRAL_ADMIN_KEY)
