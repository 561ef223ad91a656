"""Settings of the request audit: what is kept of each request's content, and for how long."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corral.config.base import Seconds, _Section

__all__ = ["AuditConfig", "ContentLevel"]

ContentLevel = Literal["off", "metadata", "full"]


class AuditConfig(_Section):
    """Request content in the audit log; admin actions are always audited."""

    content: ContentLevel = Field(
        default="off",
        description="off = no request audit rows; metadata = who, model, endpoint, backend, "
        "status, tokens, timings and parameters without the text; full = also the prompt "
        "and the answer's text.",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        le=36_500,
        description="Request audit rows older than this many days are deleted.",
    )
    purge_interval_s: Seconds = Field(
        default=3600.0,
        description="How often the gateway deletes request audit rows past retention.",
    )
    max_text_chars: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="With content full: most characters of prompt text, and of answer text, "
        "kept per request; the rest is cut and the row marked truncated.",
    )
