"""The shared base of every settings section."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Seconds", "_Section"]

Seconds = Annotated[float, Field(gt=0, description="Duration in seconds, > 0.")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
