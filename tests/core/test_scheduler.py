"""The scheduler: slots, the fair queue, drain and pause, and which errors it raises."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from corral.core.errors import ModelNotFound, NoHealthyBackend, QueueFull
from corral.core.policies import Hooks, LeastConn, RoundRobin, make_policy
from corral.core.scheduler import Scheduler, Ticket
from corral.core.types import BackendState, Outcome, RequestInfo

OK = Outcome(ok=True)


def fleet(*specs: tuple[str, int, set[str]], policy: str = "least_conn", **kw: object) -> Scheduler:
    s = Scheduler(make_policy(policy), max_waiting=3, **kw)  # type: ignore[arg-type]
    for name, slots, models in specs:
        s.add_backend(BackendState(name, f"http://{name}", max_concurrency=slots, healthy=True))
        s.set_models(name, models)
    return s


def info(model: str = "m:latest", tenant: str = "", **kw: object) -> RequestInfo:
    return RequestInfo(model, "/api/chat", tenant=tenant, **kw)  # type: ignore[arg-type]


def bound_to(t: Ticket) -> str | None:
    return t.decision.backend if t.decision is not None else None


def test_only_backends_holding_the_model_are_candidates() -> None:
    s = fleet(("a", 4, {"x:latest"}), ("b", 4, {"m:latest"}))
    assert {bound_to(s.submit(info(), 0, 5)) for _ in range(3)} == {"b"}


def test_unknown_model_raises_model_not_found() -> None:
    s = fleet(("a", 4, {"x:latest"}))
    with pytest.raises(ModelNotFound, match='model "m:latest" not found'):
        s.submit(info(), 0, 5)


def test_holders_all_down_raises_no_healthy_backend() -> None:
    s = fleet(("a", 4, {"m:latest"}))
    s.backends["a"].healthy = False
    with pytest.raises(NoHealthyBackend):
        s.submit(info(), 0, 5)


def test_disabled_draining_and_tried_backends_are_skipped() -> None:
    s = fleet(("a", 4, {"m:latest"}), ("b", 4, {"m:latest"}), ("c", 4, {"m:latest"}))
    s.backends["a"].enabled = False
    s.drain("c")
    assert bound_to(s.submit(info(), 0, 5)) == "b"
    with pytest.raises(NoHealthyBackend):
        s.submit(info(), 0, 5, exclude=frozenset({"b"}))


def test_never_exceeds_max_concurrency_and_queues_beyond_it() -> None:
    s = fleet(("a", 2, {"m:latest"}))
    tickets = [s.submit(info(), 0, 5) for _ in range(3)]
    assert [bound_to(t) for t in tickets] == ["a", "a", None]
    assert s.backends["a"].in_flight == 2 and s.waiting == 1


def test_per_model_cap_holds_while_the_backend_has_room() -> None:
    s = fleet(("a", 4, {"m:latest", "x:latest"}))
    s.backends["a"].max_per_model = 1
    assert bound_to(s.submit(info("m:latest"), 0, 5)) == "a"
    assert bound_to(s.submit(info("m:latest"), 0, 5)) is None
    assert bound_to(s.submit(info("x:latest"), 0, 5)) == "a"
    assert s.backends["a"].in_flight_by_model == {"m:latest": 1, "x:latest": 1}


def test_release_hands_the_slot_to_the_oldest_waiter_of_a_tenant() -> None:
    s = fleet(("a", 1, {"m:latest"}))
    first = s.submit(info(), 0, 5)
    w1 = s.submit(info(), 10.0, 5)
    w2 = s.submit(info(), 11.0, 5)
    assert s.release(first, OK, now=12.5) == [w1]
    assert w1.decision is not None and w1.decision.queued_s == pytest.approx(2.5)
    assert s.waiting == 1 and w2.decision is None
    assert s.backends["a"].in_flight == 1


def test_a_new_request_queues_behind_waiters_for_its_model() -> None:
    s = fleet(("a", 1, {"m:latest"}), ("b", 1, {"m:latest"}))
    s.backends["b"].healthy = False
    s.submit(info(), 0, 5)
    waiter = s.submit(info(), 0, 5)
    s.backends["b"].healthy = True
    late = s.submit(info(), 1, 5)
    assert late.decision is None  # not ahead of the older waiter
    assert s.pump(1) == [waiter]


def test_a_busy_model_does_not_block_waiters_for_another_model() -> None:
    s = fleet(("a", 1, {"m:latest"}), ("b", 1, {"x:latest"}))
    s.submit(info("m:latest"), 0, 5)
    tx = s.submit(info("x:latest"), 0, 5)
    wm = s.submit(info("m:latest"), 0, 5)
    wx = s.submit(info("x:latest"), 0, 5)
    # b frees up: the x waiter behind the m waiter gets it.
    assert s.release(tx, OK, now=1) == [wx]
    assert wm.decision is None


def test_queue_is_bounded_overall_and_per_tenant() -> None:
    s = fleet(("a", 1, {"m:latest"}))
    s.submit(info(), 0, 5)
    for _ in range(3):
        s.submit(info(), 0, 5)
    with pytest.raises(QueueFull) as full:
        s.submit(info(), 0, 5)
    assert full.value.status == 503
    s2 = fleet(("a", 1, {"m:latest"}), max_waiting_per_tenant=1)
    s2.submit(info(tenant="t"), 0, 5)
    s2.submit(info(tenant="t"), 0, 5)
    with pytest.raises(QueueFull) as mine:
        s2.submit(info(tenant="t"), 0, 5)
    assert mine.value.status == 429
    assert s2.submit(info(tenant="u"), 0, 5).decision is None  # another tenant still queues


def test_cancelled_waiter_leaves_the_queue() -> None:
    s = fleet(("a", 1, {"m:latest"}))
    first = s.submit(info(), 0, 5)
    w = s.submit(info(), 0, 5)
    s.cancel(w)
    assert s.waiting == 0
    assert s.release(first, OK, now=1) == []


def test_expired_waiters_are_returned_by_expire() -> None:
    s = fleet(("a", 1, {"m:latest"}))
    s.submit(info(), 0, 5)
    w1 = s.submit(info(), 0, 2)
    w2 = s.submit(info(), 1, 5)
    assert s.next_deadline() == 2
    assert s.expire(2.0) == [w1]
    assert s.waiting == 1 and s.next_deadline() == 6 and w2.decision is None


def test_a_recovered_backend_serves_waiters_on_pump() -> None:
    s = fleet(("a", 1, {"m:latest"}), ("b", 1, {"m:latest"}))
    s.backends["b"].healthy = False
    s.submit(info(), 0, 5)
    w = s.submit(info(), 0, 5)
    assert s.pump(1) == []
    s.backends["b"].healthy = True
    assert s.pump(2) == [w]
    assert bound_to(w) == "b"


def test_pause_holds_everything_until_resume() -> None:
    s = fleet(("a", 2, {"m:latest"}))
    s.pause()
    t = s.submit(info(), 0, 5)
    assert t.decision is None and s.pump(1) == []
    assert s.resume(2) == [t]


def test_a_draining_backend_finishes_its_work_and_takes_nothing_new() -> None:
    s = fleet(("a", 2, {"m:latest"}), ("b", 2, {"m:latest"}))
    running = [s.submit(info(), 0, 5) for _ in range(4)]
    s.drain("a")
    on_a = [t for t in running if bound_to(t) == "a"]
    assert on_a and not s.drained("a")
    for t in on_a:
        s.release(t, OK, 1)
    assert s.drained("a")
    assert all(bound_to(s.submit(info(), 2, 5)) in ("b", None) for _ in range(2))


def test_forget_model_removes_it_from_that_backend_only() -> None:
    s = fleet(("a", 1, {"m:latest"}), ("b", 1, {"m:latest"}))
    s.forget_model("a", "m:latest")
    assert [b.name for b in s.holders("m:latest")] == ["b"]


def test_tokens_are_shared_by_weight_among_backlogged_tenants() -> None:
    """VTC: with everyone backlogged, service divides in proportion to weight."""
    s = Scheduler(LeastConn(), max_waiting=10_000)
    s.add_backend(BackendState("a", "u", max_concurrency=1, healthy=True))
    s.set_models("a", {"m:latest"})
    weights = {"light": 1.0, "mid": 2.0, "heavy": 3.0}
    current: list[Ticket] = []
    for _ in range(300):
        for tenant, w in weights.items():
            t = s.submit(info(tenant=tenant, weight=w, prompt_tokens=100), 0, 1e9)
            if t.decision is not None:
                current.append(t)  # the very first request binds at once
    served = dict.fromkeys(weights, 0)
    now = 0.0
    for _ in range(600):
        ticket = current.pop()
        served[ticket.info.tenant] += 1
        now += 1
        current.extend(
            s.release(ticket, Outcome(ok=True, prompt_tokens=100, output_tokens=50), now)
        )
    per_weight = [served[t] / w for t, w in weights.items()]
    assert max(per_weight) / min(per_weight) < 1.05


def test_an_idle_tenant_banks_no_credit() -> None:
    s = Scheduler(LeastConn(), max_waiting=10_000)
    s.add_backend(BackendState("a", "u", max_concurrency=1, healthy=True))
    s.set_models("a", {"m:latest"})
    first = s.submit(info(tenant="busy", prompt_tokens=1000), 0, 1e9)
    # "busy" runs alone for a long time, then "late" arrives with "busy" backlogged.
    for _ in range(5):
        s.submit(info(tenant="busy", prompt_tokens=1000), 0, 1e9)
    current = [first]
    for i in range(3):
        current = s.release(current[0], Outcome(ok=True, prompt_tokens=1000), i + 1)
    late = [s.submit(info(tenant="late", prompt_tokens=1000), 4, 1e9) for _ in range(3)]
    # "late" starts at the backlogged minimum, so the two alternate instead of "late"
    # taking every slot until it catches up with all that "busy" was served.
    order = []
    for i in range(4):
        current = s.release(current[0], Outcome(ok=True, prompt_tokens=1000), 5 + i)
        order.append(current[0].info.tenant)
    assert "busy" in order and "late" in order
    assert late[0].decision is not None


def test_priority_goes_first_and_aging_lifts_the_low_class() -> None:
    s = Scheduler(LeastConn(), max_waiting=100, aging_s=10)
    s.add_backend(BackendState("a", "u", max_concurrency=1, healthy=True))
    s.set_models("a", {"m:latest"})
    running = s.submit(info(tenant="x"), 0, 1e9)
    low = s.submit(info(tenant="low", priority=0), 0, 1e9)
    high = s.submit(info(tenant="high", priority=1), 5, 1e9)
    assert s.release(running, OK, 6) == [high]
    high2 = s.submit(info(tenant="high", priority=1), 6, 1e9)
    # At t=21 "low" has waited 21 s: two aging steps put it above class 1.
    assert s.release(high, OK, 21) == [low]
    assert high2.decision is None


class _WaitForA(Hooks):
    """Prefers backend a even when it is busy (like a cost model avoiding a load)."""

    name = "wait_for_a"

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str] | None:
        a = [b for b in candidates if b.name == "a"]
        return (a[0], "a is worth the wait") if a else None


def test_a_policy_may_wait_for_a_busy_backend() -> None:
    s = Scheduler(_WaitForA(), max_waiting=10)
    for name in "ab":
        s.add_backend(BackendState(name, "u", max_concurrency=1, healthy=True))
        s.set_models(name, {"m:latest"})
    first = s.submit(info(), 0, 5)
    second = s.submit(info(), 0, 5)
    assert bound_to(first) == "a" and second.decision is None  # b was free, it waited
    assert s.release(first, OK, 1) == [second] and bound_to(second) == "a"


def test_least_conn_prefers_the_least_loaded_relative_to_capacity() -> None:
    a = BackendState("a", "u", max_concurrency=8, in_flight=2, healthy=True)
    b = BackendState("b", "u", max_concurrency=2, in_flight=1, healthy=True)
    chosen, reason = LeastConn().select([a, b], info(), 0)
    assert chosen is a
    assert "least_conn" in reason


def test_least_conn_spreads_ties() -> None:
    s = fleet(("a", 4, {"m:latest"}), ("b", 4, {"m:latest"}))
    picks = []
    for _ in range(4):
        t = s.submit(info(), 0, 5)
        picks.append(bound_to(t))
        s.release(t, OK, now=0)
    assert set(picks) == {"a", "b"}


def test_round_robin_rotates_per_model() -> None:
    policy = RoundRobin()
    states = [BackendState(n, "u", healthy=True) for n in "abc"]
    order = [policy.select(states, info(), 0)[0].name for _ in range(4)]
    assert order == ["a", "b", "c", "a"]


def test_unknown_policy_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown routing policy"):
        make_policy("fastest")


def test_aging_never_lets_an_old_request_jump_its_own_class() -> None:
    """A flooding tenant's old backlog must not beat a light tenant's fair share."""
    s = Scheduler(LeastConn(), max_waiting=1000, aging_s=10)
    s.add_backend(BackendState("a", "u", max_concurrency=1, healthy=True))
    s.set_models("a", {"m:latest"})
    current = [s.submit(info(tenant="flood", prompt_tokens=100), 0, 1e9)]
    for _ in range(50):
        s.submit(info(tenant="flood", prompt_tokens=100), 0, 1e9)
    # Much later the flood's heads are old; a light tenant arrives.
    light = s.submit(info(tenant="light", prompt_tokens=100), 100, 1e9)
    served = []
    for i in range(3):
        current = s.release(current[0], Outcome(ok=True, prompt_tokens=100), 101 + i)
        served.append(current[0].info.tenant)
    # Equal counters at first (the light tenant starts level, VTC's lift), then the
    # light tenant's smaller counter wins: it is served within two turns, not after
    # the whole flood.
    assert "light" in served[:2] and light.decision is not None


def test_a_retry_goes_to_the_front_of_its_queue() -> None:
    s = fleet(("a", 1, {"m:latest"}), ("b", 1, {"m:latest"}))
    first = s.submit(info(), 0, 5)
    second = s.submit(info(), 0, 5)
    waiting = s.submit(info(), 1, 5)
    assert waiting.decision is None
    # "first" failed on its backend: its retry (attempt 2, that backend excluded)
    # waits ahead of the request that queued after it.
    assert first.decision is not None
    failed_on = first.decision.backend
    s.release(first, Outcome(ok=False), 2)
    assert waiting.decision is not None  # the freed slot went to the waiter...
    retry = s.submit(info(), 2, 5, exclude=frozenset({failed_on}), attempt=2)
    later = s.submit(info(), 2.5, 5)
    assert bound_to(second) != failed_on
    assert s.release(second, OK, 3) == [retry]  # ...but the retry beats "later"
    assert later.decision is None


def test_a_request_on_a_removed_backend_gives_its_slot_back_to_the_old_state() -> None:
    from corral.core.breakers import BreakerBoard

    board = BreakerBoard()
    s = fleet(("a", 1, {"m:latest"}), breakers=board)
    old = s.backends["a"]
    running = s.submit(info(), 0, 5)
    s.remove_backend("a")
    # The same name joins again (a re-registration) before the request ends.
    s.add_backend(BackendState("a", "http://a2", max_concurrency=1, healthy=True))
    s.set_models("a", {"m:latest"})
    new = s.backends["a"]
    assert bound_to(s.submit(info(), 0, 5)) == "a" and new.in_flight == 1
    s.release(running, Outcome(ok=False, status=502), 1)
    assert (old.in_flight, new.in_flight) == (0, 1)
    assert (old.failed, new.failed) == (0, 0)  # the old one is gone; the new one did not fail
    assert board.snapshot(1) == [] and s.in_flight == 1
