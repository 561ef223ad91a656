"""Fixtures: a real llama.cpp engine (a child process) serving the tiny model.

One engine per module keeps the suite fast: it starts in ~0.2 s and the tiny model
answers in milliseconds, so tests share it rather than each paying for a process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.engines.llamacpp import LlamaCppServer, start_llamacpp
from corral.engines.tinymodel import write_tiny_model
from tests.engines.support import ALIAS


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf")


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[LlamaCppServer]:
    """Two slots, no embeddings, listed as ``tiny-llama``."""
    with start_llamacpp(tiny_model, parallel=2, alias=ALIAS) as server:
        yield server


@pytest.fixture
def client(engine: LlamaCppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=engine.url, timeout=30.0) as http:
        yield http
