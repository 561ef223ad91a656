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
        default=500, ge=1, le=10_000, description="Most rows read from the journal in one batch."
    )
    tokenize: bool = Field(
        default=True,
        description="When a backend reports no token counts, ask its own tokenizer "
        "(vLLM's and llama.cpp's /tokenize) after the answer is sent; off = estimate "
        "(about 4 characters a token).",
    )
    tokenize_timeout_s: Seconds = Field(
        default=5.0, description="Longest Corral waits for a backend's tokenizer per request."
    )
    tokenize_max_bytes: int = Field(
        default=262_144,
        ge=0,
        le=16 * 1024 * 1024,
        description="Most of a request's prompt, and of its answer as relayed, that Corral "
        "keeps to count with the tokenizer; longer ones are estimated.",
    )
