"""Settings of the usage ledger: the local journal and how it is batched into the store."""

from __future__ import annotations

from pydantic import Field

from corral.config.base import Seconds, _Section

__all__ = ["UsageConfig"]


class UsageConfig(_Section):
    """One usage row per request, journaled locally, then batched into the store."""

    journal: bool = Field(
        default=True,
        description="Keep the usage ledger: journal each finished request and batch it "
        "into the store; off = no usage rows are stored.",
    )
    batch_s: Seconds = Field(
        default=0.5, description="Longest a journaled request waits before its batch is written."
    )
    batch_max: int = Field(
        default=500, ge=1, le=10_000, description="Most rows written in one transaction."
    )
