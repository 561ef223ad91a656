"""The simple routing policies and the registry that builds them from config."""

from __future__ import annotations

from collections import Counter

import pytest

from corral.core.affinity import Sticky
from corral.core.policies import (
    POLICIES,
    CorralPolicy,
    Latency,
    PowerOfTwo,
    ScorePolicy,
    Weighted,
    make_policy,
)
from corral.core.types import BackendState, EngineSignals, Outcome, RequestInfo

M = "m:latest"


def node(name: str, *, slots: int = 4, busy: int = 0, weight: float = 1.0) -> BackendState:
    b = BackendState(
        name,
        f"http://{name}",
        max_concurrency=slots,
        weight=weight,
        healthy=True,
        models=frozenset({M}),
    )
    b.loaded[M] = float("inf")
    b.in_flight = busy
    if busy:
        b.in_flight_by_model[M] = busy
    return b


def req(i: int = 0, **kw: object) -> RequestInfo:
    return RequestInfo(M, "/api/chat", request_id=f"r{i}", **kw)  # type: ignore[arg-type]


def test_registry_names_every_policy() -> None:
    assert set(POLICIES) == {
        "round_robin",
        "least_conn",
        "weighted",
        "p2c",
        "latency",
        "score",
        "corral",
    }
    for name in POLICIES:
        assert make_policy(name).name == name


def test_make_policy_passes_options_to_the_policy() -> None:
    p = make_policy("score", {"latency_weight": 0.0, "load_weight": 1.0})
    assert isinstance(p, ScorePolicy)
    assert p.weights == (0.0, 0.30, 1.0, 0.15)
    c = make_policy("corral", {"load_bytes_per_s": 2e9, "session_affinity": False})
    assert isinstance(c, CorralPolicy)
    assert c.loads.load_bytes_per_s == 2e9


def test_unknown_option_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'latency_wieght'"):
        make_policy("score", {"latency_wieght": 1.0})
    with pytest.raises(ValueError, match="'seed'"):
        make_policy("least_conn", {"seed": 3})


def test_bad_option_values_are_value_errors() -> None:
    with pytest.raises(ValueError, match="load_bytes_per_s"):
        make_policy("corral", {"load_bytes_per_s": 0})
    with pytest.raises(ValueError, match="weights"):
        make_policy("score", {"success_weight": -1})


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: corral, latency"):
        make_policy("fastest")


def test_affinity_options_wrap_any_policy_in_sticky() -> None:
    p = make_policy("least_conn", {"session_affinity": True})
    assert isinstance(p, Sticky)
    assert p.name == "least_conn"
    a, b = node("a"), node("b")
    first = p.select([a, b], req(session="s1"), 0.0)
    assert first is not None
    p.on_dispatch(first[0], req(session="s1"), 0.0)
    first[0].in_flight += 1  # now the other is less loaded, but within bounds
    again = p.select([a, b], req(1, session="s1"), 1.0)
    assert again is not None and again[0] is first[0]
    assert "session" in again[1]


def test_weighted_splits_in_proportion_to_weights_and_interleaves() -> None:
    p = Weighted()
    a, b, c = node("a", weight=3), node("b", weight=1), node("c", weight=0)
    picks = [p.select([a, b, c], req(), 0.0)[0].name for _ in range(400)]
    assert Counter(picks) == {"a": 300, "b": 100}
    # Smooth: the light backend is not starved for long stretches.
    assert max(len(run) for run in "".join(picks).split("b")) <= 3


def test_weighted_skips_backends_without_a_free_slot() -> None:
    p = Weighted()
    a, b = node("a", weight=5, slots=1, busy=1), node("b", weight=1)
    assert {p.select([a, b], req(), 0.0)[0].name for _ in range(10)} == {"b"}


def test_p2c_is_deterministic_under_a_seed() -> None:
    fleet = [node(f"n{i}", busy=i % 4) for i in range(8)]
    run1 = [PowerOfTwo(seed=7).select(fleet, req(), 0.0)[0].name for _ in range(1)]
    p, q = PowerOfTwo(seed=7), PowerOfTwo(seed=7)
    seq_p = [p.select(fleet, req(), 0.0)[0].name for _ in range(50)]
    seq_q = [q.select(fleet, req(), 0.0)[0].name for _ in range(50)]
    other = PowerOfTwo(seed=8)
    seq_o = [other.select(fleet, req(), 0.0)[0].name for _ in range(50)]
    assert seq_p == seq_q
    assert seq_p[:1] == run1
    assert seq_p != seq_o


def test_p2c_takes_the_less_loaded_of_its_two_samples() -> None:
    idle, full = node("idle"), node("loaded", busy=3)
    p = PowerOfTwo(seed=1)
    assert {p.select([full, idle], req(), 0.0)[0].name for _ in range(20)} == {"idle"}


def test_latency_explores_unmeasured_backends_then_prefers_the_fastest() -> None:
    p = Latency()
    fast, slow = node("fast"), node("slow")
    first = p.select([slow, fast], req(), 0.0)
    assert "exploring" in first[1]
    p.on_complete(slow, req(), Outcome(ok=True, ttft_s=2.0), 1.0)
    assert p.select([slow, fast], req(), 1.0)[0] is fast  # unmeasured beats 2 s
    p.on_complete(fast, req(), Outcome(ok=True, ttft_s=0.2), 2.0)
    chosen, reason = p.select([slow, fast], req(), 3.0)
    assert chosen is fast and "0.200s" in reason


def test_latency_re_explores_backends_whose_figure_went_stale() -> None:
    p = Latency(stale_after_s=30.0)
    fast, slow = node("fast"), node("slow")
    p.on_complete(slow, req(), Outcome(ok=True, ttft_s=2.0), 0.0)
    p.on_complete(fast, req(), Outcome(ok=True, ttft_s=0.2), 100.0)
    assert p.select([slow, fast], req(), 101.0)[0] is slow  # slow's 2 s is 101 s old


def test_score_moves_traffic_away_from_a_failing_backend() -> None:
    p = ScorePolicy()
    a, b = node("a"), node("b")
    for t in range(10):
        p.on_complete(a, req(), Outcome(ok=False, ttft_s=None), float(t))
        p.on_complete(b, req(), Outcome(ok=True, ttft_s=0.1), float(t))
    assert Counter(p.select([a, b], req(), 10.0)[0].name for _ in range(10)) == {"b": 10}


def test_score_weights_are_configurable() -> None:
    only_load = ScorePolicy(latency_weight=0, success_weight=0, capacity_weight=0, load_weight=1)
    big_busy, small_idle = node("big", slots=16, busy=8), node("small", slots=2)
    assert only_load.select([big_busy, small_idle], req(), 0.0)[0] is small_idle
    only_capacity = ScorePolicy(latency_weight=0, success_weight=0, load_weight=0)
    assert only_capacity.select([big_busy, small_idle], req(), 0.0)[0] is big_busy


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_reason_is_one_short_ascii_line(name: str) -> None:
    p = make_policy(name)
    weird = node("n\u00e9\nw-" + "x" * 200, busy=1)
    vllm = node("vllm-" + "y" * 100)
    vllm.kind = "openai"
    vllm.signals = EngineSignals(waiting=3, kv_cache_usage=0.9)
    for i in range(5):
        choice = p.select([weird, vllm, node("plain")], req(i, prompt_tokens=500), float(i))
        assert choice is not None
        reason = choice[1]
        assert reason.isascii() and reason.isprintable() and len(reason) < 160, reason
