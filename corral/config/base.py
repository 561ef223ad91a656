"""The shared base of every settings section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Seconds", "_Section", "default_data_dir"]

Seconds = Annotated[float, Field(gt=0, description="Duration in seconds, > 0.")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/corral``, else ``~/.local/share/corral``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "corral"
