"""``parallel`` slots: requests up to that number really run at the same time."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from corral.engines.llamacpp import LlamaCppServer, start_llamacpp
from corral.engines.tinymodel import TINY, write_tiny_model

# Long generations (~0.4 s each) keep the timing margins wide on a busy machine. They
# need more context than the tiny model's 512 tokens, so these engines serve a variant
# with a longer context.
LONG_CTX = 1024
MAX_TOKENS = 800
LONG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS, "stream": True}


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "tiny-long.gguf"
    return write_tiny_model(path, spec=replace(TINY, n_ctx=LONG_CTX))


def token_window(url: str, first_token: threading.Event | None = None) -> tuple[float, float]:
    """When the first and the last streamed token of one long chat arrived."""
    stamps: list[float] = []
    with (
        httpx.Client(base_url=url, timeout=60.0) as http,
        http.stream("POST", "/v1/chat/completions", json=LONG) as response,
    ):
        for line in response.iter_lines():
            if '"content":"' in line:
                stamps.append(time.perf_counter())
                if first_token is not None:
                    first_token.set()
    assert len(stamps) == MAX_TOKENS
    return stamps[0], stamps[-1]


def overlap_of_two_long_requests(url: str) -> float:
    """The share of the shorter request during which both were producing tokens.

    The second request is sent once the first has streamed a token, so it arrives
    while the first holds a slot: with a free slot it runs at once, else it waits.
    """
    windows: list[tuple[float, float]] = []
    started = threading.Event()
    first = threading.Thread(target=lambda: windows.append(token_window(url, started)))
    second = threading.Thread(target=lambda: windows.append(token_window(url)))
    first.start()
    assert started.wait(30.0)
    second.start()
    first.join()
    second.join()
    (a0, a1), (b0, b1) = windows
    shared = min(a1, b1) - max(a0, b0)
    return max(shared, 0.0) / min(a1 - a0, b1 - b0)


def test_the_engine_has_one_slot_per_parallel_request(engine: LlamaCppServer) -> None:
    with httpx.Client(base_url=engine.url) as http:
        slots = http.get("/slots").json()
    assert [slot["id"] for slot in slots] == [0, 1]
    # The KV cache (ctx = 512 x parallel) is split evenly between the slots.
    assert {slot["n_ctx"] for slot in slots} == {512}


def test_two_long_requests_overlap_in_time_on_two_slots(long_model: Path) -> None:
    with start_llamacpp(long_model, parallel=2, ctx=2 * LONG_CTX) as engine:
        assert overlap_of_two_long_requests(engine.url) > 0.5


def test_one_slot_runs_them_one_after_the_other(long_model: Path) -> None:
    with start_llamacpp(long_model, parallel=1, ctx=LONG_CTX) as single:
        assert overlap_of_two_long_requests(single.url) < 0.05
