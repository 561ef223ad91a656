"""The autoscaler's rules, with time passed in."""

from __future__ import annotations

import pytest

from corral.core.autoscale import (
    Autoscaler,
    Pressure,
    ScaleRule,
    WorkerLoad,
    next_gpu,
    prune_order,
)

IDLE = Pressure()


def ready(wid: str, *, in_flight: int = 0, idle_since: float | None = 0.0) -> WorkerLoad:
    return WorkerLoad(wid, ready=True, in_flight=in_flight, idle_since=idle_since)


def starting(wid: str, at: float = 0.0) -> WorkerLoad:
    return WorkerLoad(wid, ready=False, started_at=at)


def scaler(**rule: object) -> Autoscaler:
    defaults: dict[str, object] = {
        "min": 1,
        "max": 4,
        "up_queue": 4,
        "up_wait_s": 10.0,
        "idle_s": 60.0,
        "cooldown_s": 30.0,
        "retry_base_s": 1.0,
    }
    return Autoscaler(ScaleRule(**(defaults | rule)))  # type: ignore[arg-type]


def test_below_min_adds_the_difference_at_once() -> None:
    a = scaler(min=3)
    d = a.decide([ready("w1")], IDLE, now=0.0)
    assert (d.add, d.remove, d.kind) == (2, (), "min")
    assert d.reason == "below min (1 of 3)"


def test_refilling_min_ignores_the_cooldown() -> None:
    a = scaler(min=2)
    a.decide([ready("w1"), ready("w2")], Pressure(9, 0.0), now=0.0)  # scales up: cooling
    assert a.decide([ready("w1")], IDLE, now=1.0).add == 1


def test_failures_hold_back_the_next_start_doubling() -> None:
    a = scaler(min=1, retry_base_s=1.0, retry_max_s=3.0)
    a.failed(now=10.0)
    assert not a.decide([], IDLE, now=10.5)
    assert a.decide([], IDLE, now=11.0).add == 1
    a.failed(now=11.0)  # second in a row: 2 s
    assert not a.decide([], IDLE, now=12.9)
    assert a.decide([], IDLE, now=13.0).add == 1
    a.failed(now=13.0)
    a.failed(now=13.0)  # fourth: 8 s, capped at 3
    assert a.decide([], IDLE, now=16.0).add == 1


def test_a_ready_worker_clears_the_failures() -> None:
    a = scaler(min=1)
    a.failed(now=0.0)
    a.failed(now=0.0)
    a.succeeded()
    assert a.failures == 0
    assert a.decide([], IDLE, now=0.0).add == 1


def test_queue_depth_adds_one_worker_per_up_queue_waiting() -> None:
    a = scaler(min=1, max=10, up_queue=4)
    d = a.decide([ready("w1", in_flight=4)], Pressure(waiting=9, oldest_wait_s=0.1), now=0.0)
    assert (d.add, d.kind) == (3, "up")  # ceil(9 / 4)
    assert "9 waiting" in d.reason


def test_a_long_wait_adds_a_worker_even_with_a_short_queue() -> None:
    a = scaler(up_queue=4, up_wait_s=5.0)
    assert not a.decide([ready("w1", in_flight=4)], Pressure(1, 4.9), now=0.0)
    assert a.decide([ready("w1", in_flight=4)], Pressure(1, 5.0), now=0.0).add == 1


def test_scale_up_never_passes_max() -> None:
    a = scaler(min=1, max=3, up_queue=1)
    d = a.decide([ready("w1", in_flight=4)], Pressure(50, 1.0), now=0.0)
    assert d.add == 2
    a2 = scaler(min=1, max=1, up_queue=1)
    assert not a2.decide([ready("w1", in_flight=4)], Pressure(50, 1.0), now=0.0)


def test_workers_still_starting_count_against_the_need() -> None:
    a = scaler(max=10, up_queue=4)
    workers = [ready("w1", in_flight=4), starting("w2"), starting("w3")]
    assert not a.decide(workers, Pressure(8, 1.0), now=0.0)  # wants 2; 2 are coming
    assert a.decide(workers, Pressure(12, 1.0), now=0.0).add == 1


def test_two_scaling_actions_are_a_cooldown_apart() -> None:
    a = scaler(max=10, up_queue=1, cooldown_s=30.0, idle_s=5.0)
    busy = [ready("w1", in_flight=4)]
    assert a.decide(busy, Pressure(2, 1.0), now=100.0).add == 2
    assert not a.decide(busy, Pressure(6, 1.0), now=129.9)
    assert a.decide(busy, Pressure(6, 1.0), now=130.0).add == 6
    # Down too: idle long enough, but the last action was at 130.
    idle = [ready("w1", idle_since=0.0), ready("w2", idle_since=0.0)]
    assert not a.decide(idle, IDLE, now=159.0)
    assert a.decide(idle, IDLE, now=160.0).remove == ("w1",)


def test_failed_starts_hold_back_scale_up() -> None:
    a = scaler(up_queue=1)
    a.failed(now=0.0)
    assert not a.decide([ready("w1", in_flight=4)], Pressure(3, 1.0), now=0.5)
    assert a.last_action_at is None  # nothing done, so no cooldown started


def test_idle_workers_are_pruned_down_to_min_longest_idle_first() -> None:
    a = scaler(min=1, idle_s=60.0)
    workers = [
        ready("w1", idle_since=50.0),
        ready("w2", idle_since=10.0),
        ready("w3", idle_since=30.0),
        ready("w4", in_flight=1, idle_since=None),
    ]
    d = a.decide(workers, IDLE, now=120.0)
    # w1 has been idle 70 s, w2 110 s, w3 90 s; the busy w4 keeps the floor of one.
    assert (d.remove, d.kind) == (("w2", "w3", "w1"), "down")
    assert "idle" in d.reason


def test_min_is_kept_when_pruning_idle_workers() -> None:
    a = scaler(min=2, idle_s=1.0)
    workers = [ready("w1"), ready("w2"), ready("w3")]
    assert a.decide(workers, IDLE, now=100.0).remove == ("w1",)


def test_no_pruning_while_requests_wait() -> None:
    a = scaler(min=0, up_queue=10, up_wait_s=100.0, idle_s=1.0)
    workers = [ready("w1"), ready("w2")]
    assert not a.decide(workers, Pressure(1, 0.1), now=100.0)


def test_starting_and_busy_workers_are_not_idle() -> None:
    a = scaler(min=0, idle_s=1.0)
    workers = [starting("w1"), ready("w2", in_flight=2, idle_since=0.0)]
    assert not a.decide(workers, IDLE, now=100.0)


def test_autoscale_off_keeps_only_the_floor() -> None:
    a = scaler(min=1, autoscale=False, up_queue=1, idle_s=1.0)
    assert not a.decide([ready("w1", in_flight=4)], Pressure(100, 100.0), now=0.0)
    assert not a.decide([ready("w1"), ready("w2")], IDLE, now=100.0)
    assert a.decide([], IDLE, now=0.0).add == 1


def test_rule_rejects_min_above_max() -> None:
    with pytest.raises(ValueError):
        ScaleRule(min=3, max=2)


def test_prune_idle_takes_only_idle_ready_workers_longest_idle_first() -> None:
    workers = [
        ready("busy", in_flight=1, idle_since=None),
        ready("recent", idle_since=90.0),
        starting("new", at=95.0),
        ready("old", idle_since=10.0),
    ]
    assert prune_order(workers, "idle", now=100.0) == ["old", "recent"]


def test_prune_all_takes_idle_then_starting_then_the_least_busy() -> None:
    workers = [
        ready("busier", in_flight=3, idle_since=None),
        ready("busy", in_flight=1, idle_since=None),
        starting("older", at=10.0),
        starting("newer", at=20.0),
        ready("idle", idle_since=50.0),
    ]
    assert prune_order(workers, "all", now=100.0) == ["idle", "newer", "older", "busy", "busier"]


def test_gpus_go_round_robin() -> None:
    gpus = ["0", "1", "2"]
    used: dict[str, int] = {}
    turn = 0
    picked = []
    for _ in range(5):
        gpu, turn = next_gpu(gpus, used, turn)
        used[gpu] = used.get(gpu, 0) + 1
        picked.append(gpu)
    assert picked == ["0", "1", "2", "0", "1"]


def test_a_gpu_freed_by_a_prune_is_refilled_first() -> None:
    gpu, turn = next_gpu(["0", "1", "2"], {"0": 2, "1": 1, "2": 2}, turn=2)
    assert (gpu, turn) == ("1", 2)


def test_next_gpu_needs_gpus() -> None:
    with pytest.raises(ValueError):
        next_gpu([], {}, 0)
