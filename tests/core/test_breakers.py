"""Circuit breakers per backend and backend:model, cooldowns, and the scheduler with them."""

from __future__ import annotations

import pytest

from corral.core.breakers import BreakerBoard, BreakerConfig
from corral.core.policies import LeastConn
from corral.core.retry import NO_RESPONSE, retry_after_s
from corral.core.scheduler import Scheduler
from corral.core.types import BackendState, Outcome, RequestInfo

OK = Outcome(ok=True)
BUSY = Outcome(ok=False, transient=True, status=503)
DOWN = Outcome(ok=False, transient=True, status=NO_RESPONSE)
BAD_REQUEST = Outcome(ok=False, transient=False, status=400)
MISSING = Outcome(ok=False, transient=False, status=404)


def fail(board: BreakerBoard, n: int, outcome: Outcome = BUSY, *, model: str = "qwen") -> None:
    for _ in range(n):
        board.record("b1", model, outcome, 0.0)


def test_five_consecutive_transient_failures_open_it() -> None:
    board = BreakerBoard()
    fail(board, 4)
    assert board.allows("b1", "qwen", 0.0)
    fail(board, 1)
    assert not board.allows("b1", "qwen", 0.0)
    assert [str(e) for e in board.drain_events()] == [
        "opened b1:qwen: 5 consecutive failures (503), for 5s"
    ]
    assert board.drain_events() == []


def test_a_success_resets_the_consecutive_count() -> None:
    board = BreakerBoard(BreakerConfig(min_requests=100))  # the error rate stays out of it
    for _ in range(3):
        fail(board, 4)
        board.record("b1", "qwen", OK, 0.0)
    assert board.allows("b1", "qwen", 0.0)


def test_permanent_failures_do_not_count_against_the_breaker() -> None:
    board = BreakerBoard()
    fail(board, 20, BAD_REQUEST)
    fail(board, 20, MISSING)
    assert board.allows("b1", "qwen", 0.0)
    assert board.snapshot(0.0) == []
    fail(board, 4)
    fail(board, 3, BAD_REQUEST)  # neither resets nor adds to the streak
    fail(board, 1)
    assert not board.allows("b1", "qwen", 0.0)


def test_error_rate_trips_only_once_min_requests_are_seen() -> None:
    board = BreakerBoard(BreakerConfig(error_rate=0.5, min_requests=10))
    for i in range(9):
        board.record("b1", "qwen", BUSY if i % 2 else OK, float(i))
    assert board.allows("b1", "qwen", 9.0)  # 4 failures in 9: too few answers to judge
    board.record("b1", "qwen", BUSY, 9.0)
    assert not board.allows("b1", "qwen", 9.0)
    (event,) = board.drain_events()
    assert str(event) == "opened b1:qwen: error rate 50% (5/10) over 30s, last 503, for 5s"


def test_error_rate_forgets_failures_older_than_the_window() -> None:
    board = BreakerBoard(BreakerConfig(window_s=30, min_requests=10))
    for i in range(8):
        board.record("b1", "qwen", BUSY if i % 2 else OK, 0.0)
    for i in range(8):
        board.record("b1", "qwen", BUSY if i % 2 else OK, 40.0)
    assert board.allows("b1", "qwen", 40.0)


def test_half_open_admits_exactly_the_probes_then_success_closes() -> None:
    board = BreakerBoard(BreakerConfig(half_open_probes=2))
    fail(board, 5)
    assert not board.allows("b1", "qwen", 4.9)
    assert board.allows("b1", "qwen", 5.0)
    board.on_dispatch("b1", "qwen", 5.0)
    assert board.allows("b1", "qwen", 5.0)
    board.on_dispatch("b1", "qwen", 5.0)
    assert not board.allows("b1", "qwen", 5.1)
    (view,) = board.snapshot(5.1)
    assert (view.state, view.probes_in_flight, view.until) == ("half_open", 2, None)
    board.record("b1", "qwen", OK, 6.0)
    assert board.allows("b1", "qwen", 6.0)
    assert board.snapshot(6.0) == []
    assert [e.event for e in board.drain_events()] == ["opened", "half_open", "closed"]


def test_a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_cap() -> None:
    board = BreakerBoard(BreakerConfig(open_s=5, max_open_s=20))
    fail(board, 5)
    now, periods = 0.0, []
    for _ in range(4):
        (view,) = board.snapshot(now)
        assert view.until is not None
        periods.append(view.until - now)
        now = view.until
        assert board.allows("b1", "qwen", now)
        board.on_dispatch("b1", "qwen", now)
        board.record("b1", "qwen", BUSY, now + 0.01)
        now += 0.01
    assert periods == pytest.approx([5, 10, 20, 20])
    assert "probe failed (503), for 20s" in str(board.drain_events()[-1])


def test_the_doubling_starts_again_after_a_calm_window() -> None:
    board = BreakerBoard(BreakerConfig(open_s=5, window_s=30))
    fail(board, 5)
    board.on_dispatch("b1", "qwen", 5.0)
    board.record("b1", "qwen", BUSY, 5.0)  # reopened for 10 s
    board.on_dispatch("b1", "qwen", 15.0)
    board.record("b1", "qwen", OK, 15.0)  # closed at 15
    for _ in range(5):
        board.record("b1", "qwen", BUSY, 50.0)
    (view,) = board.snapshot(50.0)
    assert view.until == 55.0


def test_a_permanent_probe_outcome_frees_the_probe_without_deciding() -> None:
    board = BreakerBoard()
    fail(board, 5)
    assert board.allows("b1", "qwen", 5.0)
    board.on_dispatch("b1", "qwen", 5.0)
    board.record("b1", "qwen", BAD_REQUEST, 5.5)
    assert board.allows("b1", "qwen", 5.5)
    assert board.snapshot(5.5)[0].state == "half_open"


def test_a_request_sent_before_the_breaker_opened_says_nothing_of_recovery() -> None:
    board = BreakerBoard()
    fail(board, 5)
    assert board.allows("b1", "qwen", 6.0)
    board.on_dispatch("b1", "qwen", 6.0)
    board.record("b1", "qwen", Outcome(ok=True, duration_s=7.0), 6.5)  # sent at -0.5
    assert not board.allows("b1", "qwen", 6.5)  # still half-open, its probe out
    board.record("b1", "qwen", Outcome(ok=True, duration_s=0.5), 6.5)
    assert board.allows("b1", "qwen", 6.5)
    assert board.snapshot(6.5) == []


def test_lost_probes_free_their_place_after_the_probe_timeout() -> None:
    board = BreakerBoard(BreakerConfig(probe_timeout_s=60))
    fail(board, 5)
    assert board.allows("b1", "qwen", 5.0)
    board.on_dispatch("b1", "qwen", 5.0)
    assert not board.allows("b1", "qwen", 64.0)
    assert board.allows("b1", "qwen", 65.0)


def test_a_model_breaker_does_not_block_other_models_on_the_backend() -> None:
    board = BreakerBoard()
    fail(board, 5, BUSY, model="qwen")
    assert not board.allows("b1", "qwen", 0.0)
    assert board.allows("b1", "llama", 0.0)
    assert board.allows("b2", "qwen", 0.0)


def test_connect_errors_open_the_backend_for_every_model() -> None:
    board = BreakerBoard()
    for model in ("qwen", "llama", "qwen", "phi", "qwen"):
        board.record("b1", model, DOWN, 0.0)
    assert not board.allows("b1", "qwen", 0.0)
    assert not board.allows("b1", "mistral", 0.0)
    assert board.allows("b2", "qwen", 0.0)
    (view,) = board.snapshot(0.0)
    assert (view.backend, view.model, view.state) == ("b1", None, "open")
    assert view.reason == "5 consecutive failures (no response)"
    assert str(board.drain_events()[0]).startswith("opened b1: 5 consecutive")


def test_proxy_502_and_504_are_backend_wide_and_model_errors_prove_it_alive() -> None:
    board = BreakerBoard()
    for status in (502, 504, 502, 504):
        board.record("b1", "qwen", Outcome(ok=False, status=status), 0.0)
    board.record("b1", "llama", BUSY, 0.0)  # an HTTP answer: the backend is reachable
    board.record("b1", "qwen", Outcome(ok=False, status=502), 0.0)
    assert board.allows("b1", "phi", 0.0)


def test_cooldown_from_retry_after_blocks_until_it_expires() -> None:
    board = BreakerBoard()
    seconds = retry_after_s("8")
    assert seconds is not None
    board.cooldown("b1", "qwen", 10.0 + seconds, "busy (503, Retry-After 8)", now=10.0)
    assert not board.allows("b1", "qwen", 17.9)
    assert board.allows("b1", "llama", 17.9)
    (view,) = board.snapshot(12.0)
    assert (view.state, view.since, view.until, view.cooldown_until) == (
        "cooldown",
        10.0,
        18.0,
        18.0,
    )
    assert view.reason == "busy (503, Retry-After 8)"
    assert board.allows("b1", "qwen", 18.0)
    assert board.snapshot(18.0) == []
    assert [str(e) for e in board.drain_events()] == [
        "cooldown b1:qwen: busy (503, Retry-After 8), for 8s",
        "cooldown over b1:qwen: busy (503, Retry-After 8)",
    ]


def test_a_shorter_cooldown_does_not_cut_a_longer_one() -> None:
    board = BreakerBoard()
    board.cooldown("b1", None, 30.0, "maintenance", now=0.0)
    board.cooldown("b1", None, 5.0, "busy", now=0.0)
    board.cooldown("b1", None, 0.0, "already over", now=0.0)
    assert not board.allows("b1", "anything", 29.0)
    (view,) = board.snapshot(1.0)
    assert (view.model, view.until, view.reason) == (None, 30.0, "maintenance")


def test_snapshot_lists_open_half_open_and_cooling_breakers_with_counts() -> None:
    board = BreakerBoard()
    fail(board, 5, model="qwen")
    board.record("b2", "llama", DOWN, 0.0)
    board.cooldown("b2", "llama", 3.0, "busy", now=1.0)
    fail(board, 5, model="phi")
    views = board.snapshot(2.0)
    assert [(v.backend, v.model, v.state) for v in views] == [
        ("b1", "phi", "open"),
        ("b1", "qwen", "open"),
        ("b2", "llama", "cooldown"),
    ]
    qwen = views[1]
    assert (qwen.since, qwen.until, qwen.trips) == (0.0, 5.0, 1)
    assert (qwen.consecutive_failures, qwen.window_failures, qwen.window_requests) == (5, 5, 5)
    assert qwen.reason == "5 consecutive failures (503)"
    assert [v.state for v in board.snapshot(5.0)] == ["half_open", "half_open"]


def test_clear_closes_all_one_backend_or_one_model() -> None:
    board = BreakerBoard()
    for model in ("qwen", "llama"):
        fail(board, 5, model=model)
    board.cooldown("b2", None, 60.0, "operator", now=0.0)
    assert board.clear("b1", "qwen") == 1
    assert board.allows("b1", "qwen", 0.0) and not board.allows("b1", "llama", 0.0)
    assert board.clear("b1", "qwen") == 0
    fail(board, 4, model="qwen")  # a fresh breaker: the old streak is gone
    assert board.allows("b1", "qwen", 0.0)
    assert board.clear() == 2
    assert board.snapshot(0.0) == []
    assert board.allows("b1", "llama", 0.0) and board.allows("b2", "x", 0.0)


def test_forget_backend_drops_its_breakers() -> None:
    board = BreakerBoard()
    fail(board, 5)
    board.forget_backend("b1")
    assert board.allows("b1", "qwen", 0.0)
    assert board.snapshot(0.0) == []


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(error_rate=0)
    with pytest.raises(ValueError):
        BreakerConfig(open_s=10, max_open_s=5)
    with pytest.raises(ValueError):
        BreakerConfig(half_open_probes=0)


# -- with the scheduler -------------------------------------------------------------


def test_a_backend_failing_fast_with_503_loses_traffic_until_its_probe() -> None:
    """Least-connections alone would favour the fast failer (it never has anything in
    flight); the breaker takes it out, then lets one probe through per open period."""
    board = BreakerBoard()
    sched = Scheduler(LeastConn(), max_waiting=16, breakers=board)
    for name in ("bad", "good"):
        sched.add_backend(BackendState(name, f"http://{name}", max_concurrency=8, healthy=True))
        sched.set_models(name, ["qwen:7b"])
    info = RequestInfo("qwen:7b", "/api/chat")

    def send(now: float, *, hold: bool = False) -> str:
        ticket = sched.submit(info, now, timeout=30)
        assert ticket.decision is not None
        backend = ticket.decision.backend
        if not hold:
            sched.release(ticket, BUSY if backend == "bad" else OK, now)
        return backend

    hits: list[float] = []
    now = 0.0
    while len(hits) < 5:  # until the breaker trips, both share the traffic
        if send(now) == "bad":
            hits.append(now)
        now += 0.01
    opened = hits[-1]
    assert not board.allows("bad", "qwen:7b", opened)
    while now < opened + 5.0:  # open: every request goes to the good backend
        assert send(now) == "good"
        now += 0.01
    # Half-open: exactly one probe reaches "bad"; held in flight, it admits no other.
    served = [send(now, hold=True) for _ in range(6)]
    assert served.count("bad") == 1
    (view,) = board.snapshot(now)
    assert (view.state, view.probes_in_flight) == ("half_open", 1)
    assert [e.event for e in board.drain_events()] == ["opened", "half_open"]
