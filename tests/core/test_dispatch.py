"""The dispatcher: slots, the wait queue, and which errors it raises."""

from __future__ import annotations

import pytest

from corral.core.dispatch import Dispatcher
from corral.core.errors import ModelNotFound, NoHealthyBackend, QueueFull
from corral.core.policies import LeastConn, RoundRobin, make_policy
from corral.core.types import BackendState, RequestInfo


def fleet(*specs: tuple[str, int, set[str]], policy: str = "least_conn") -> Dispatcher:
    d = Dispatcher(make_policy(policy), max_waiting=3)
    for name, slots, models in specs:
        d.add_backend(BackendState(name, f"http://{name}", max_concurrency=slots, healthy=True))
        d.set_models(name, models)
    return d


def info(model: str = "m:latest") -> RequestInfo:
    return RequestInfo(model, "/api/chat")


def test_only_backends_holding_the_model_are_candidates() -> None:
    d = fleet(("a", 4, {"x:latest"}), ("b", 4, {"m:latest"}))
    for _ in range(3):
        decision = d.bind(info())
        assert decision is not None and decision.backend == "b"


def test_unknown_model_raises_model_not_found() -> None:
    d = fleet(("a", 4, {"x:latest"}))
    with pytest.raises(ModelNotFound, match='model "m:latest" not found'):
        d.bind(info())


def test_holders_all_down_raises_no_healthy_backend() -> None:
    d = fleet(("a", 4, {"m:latest"}))
    d.backends["a"].healthy = False
    with pytest.raises(NoHealthyBackend):
        d.bind(info())


def test_disabled_and_tried_backends_are_skipped() -> None:
    d = fleet(("a", 4, {"m:latest"}), ("b", 4, {"m:latest"}))
    d.backends["a"].enabled = False
    decision = d.bind(info())
    assert decision is not None and decision.backend == "b"
    with pytest.raises(NoHealthyBackend):
        d.bind(info(), exclude=frozenset({"b"}))


def test_never_exceeds_max_concurrency_and_returns_none_when_full() -> None:
    d = fleet(("a", 2, {"m:latest"}))
    assert d.bind(info()) is not None
    assert d.bind(info()) is not None
    assert d.bind(info()) is None
    assert d.backends["a"].in_flight == 2


def test_release_hands_the_slot_to_the_oldest_waiter() -> None:
    d = fleet(("a", 1, {"m:latest"}))
    first = d.bind(info())
    assert first is not None
    w1 = d.enqueue(info(), frozenset(), now=10.0, timeout=5)
    w2 = d.enqueue(info(), frozenset(), now=11.0, timeout=5)
    bound = d.release("a", info(), ok=True, now=12.5)
    assert bound == [w1]
    assert w1.decision is not None and w1.decision.queued_s == pytest.approx(2.5)
    assert d.waiting == 1 and w2.decision is None
    assert d.backends["a"].in_flight == 1


def test_a_busy_model_does_not_block_waiters_for_another_model() -> None:
    d = fleet(("a", 1, {"m:latest"}), ("b", 1, {"x:latest"}))
    assert d.bind(info("m:latest")) is not None
    assert d.bind(info("x:latest")) is not None
    wm = d.enqueue(info("m:latest"), frozenset(), now=0, timeout=5)
    wx = d.enqueue(info("x:latest"), frozenset(), now=0, timeout=5)
    # b frees up: the x waiter behind the m waiter gets it.
    assert d.release("b", info("x:latest"), ok=True, now=1) == [wx]
    assert wm.decision is None


def test_queue_is_bounded() -> None:
    d = fleet(("a", 1, {"m:latest"}))
    for _ in range(3):
        d.enqueue(info(), frozenset(), now=0, timeout=5)
    with pytest.raises(QueueFull):
        d.enqueue(info(), frozenset(), now=0, timeout=5)


def test_cancelled_waiter_leaves_the_queue() -> None:
    d = fleet(("a", 1, {"m:latest"}))
    d.bind(info())
    w = d.enqueue(info(), frozenset(), now=0, timeout=5)
    d.cancel(w)
    assert d.waiting == 0
    assert d.release("a", info(), ok=True, now=1) == []


def test_a_recovered_backend_serves_waiters_on_pump() -> None:
    d = fleet(("a", 1, {"m:latest"}), ("b", 1, {"m:latest"}))
    d.backends["b"].healthy = False
    d.bind(info())
    w = d.enqueue(info(), frozenset(), now=0, timeout=5)
    assert d.pump(1) == []
    d.backends["b"].healthy = True
    assert d.pump(2) == [w]
    assert w.decision is not None and w.decision.backend == "b"


def test_forget_model_removes_it_from_that_backend_only() -> None:
    d = fleet(("a", 1, {"m:latest"}), ("b", 1, {"m:latest"}))
    d.forget_model("a", "m:latest")
    assert [b.name for b in d.holders("m:latest")] == ["b"]


def test_least_conn_prefers_the_least_loaded_relative_to_capacity() -> None:
    a = BackendState("a", "u", max_concurrency=8, in_flight=2, healthy=True)
    b = BackendState("b", "u", max_concurrency=2, in_flight=1, healthy=True)
    chosen, reason = LeastConn().select([a, b], info())
    assert chosen is a
    assert "least_conn" in reason


def test_least_conn_spreads_ties() -> None:
    d = fleet(("a", 4, {"m:latest"}), ("b", 4, {"m:latest"}))
    picks = []
    for _ in range(4):
        decision = d.bind(info())
        assert decision is not None
        picks.append(decision.backend)
        d.release(decision.backend, info(), ok=True, now=0)
    assert set(picks) == {"a", "b"}


def test_round_robin_rotates_per_model() -> None:
    policy = RoundRobin()
    states = [BackendState(n, "u", healthy=True) for n in "abc"]
    order = [policy.select(states, info())[0].name for _ in range(4)]
    assert order == ["a", "b", "c", "a"]


def test_unknown_policy_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown routing policy"):
        make_policy("fastest")
