"""Recent demand per model: counting, idle models and warm-up recommendations."""

from __future__ import annotations

import pytest

from corral.core.demand import (
    Demand,
    DemandCounter,
    Holder,
    Resident,
    copies_needed,
    idle_models,
    recommend,
    span,
)

T0 = 1_000_000.0  # a wall-clock time, passed in like every other


# --- counting ---------------------------------------------------------------------


def test_demand_counts_only_requests_inside_the_window() -> None:
    c = DemandCounter(bucket_s=10)
    c.add("llama3.2:1b", "sim0", T0, busy_s=2.0, waited_s=0.5)
    c.add("llama3.2:1b", "sim1", T0 + 100, busy_s=4.0, cold=True)
    c.add("llama3.2:1b", "sim0", T0 + 290, busy_s=1.0)
    recent = c.demand("llama3.2:1b", T0 + 300, 60)
    assert recent == Demand(requests=1, busy_s=1.0, waited_s=0.0, cold=0, window_s=60)
    whole = c.demand("llama3.2:1b", T0 + 300, 300)
    assert whole.requests == 3
    assert whole.busy_s == pytest.approx(7.0)
    assert whole.waited_s == pytest.approx(0.5)
    assert whole.cold == 1
    assert c.demand("qwen2.5:0.5b", T0 + 300, 300).requests == 0


def test_demand_derives_rate_concurrency_and_mean_wait() -> None:
    d = Demand(requests=30, busy_s=150.0, waited_s=15.0, cold=0, window_s=300)
    assert d.per_minute == pytest.approx(6.0)
    assert d.concurrency == pytest.approx(0.5)
    assert d.mean_wait_s == pytest.approx(0.5)
    assert Demand().mean_wait_s == 0.0


def test_old_slices_fall_off_past_the_horizon() -> None:
    c = DemandCounter(bucket_s=10, horizon_s=60)
    c.add("m", None, T0)
    c.add("m", None, T0 + 1000)
    # Asked for a window longer than the horizon: the horizon bounds it.
    d = c.demand("m", T0 + 1000, 5000)
    assert d.requests == 1 and d.window_s == 60


def test_last_seen_is_kept_per_model_and_per_backend() -> None:
    c = DemandCounter()
    c.add("m", "sim0", T0)
    c.add("m", "sim1", T0 + 5)
    c.add("m", None, T0 + 9)  # refused before routing: no backend
    c.add("m", "sim0", T0 + 2)  # a longer request that ended out of order
    assert c.last_seen("m") == T0 + 9
    assert c.last_seen("m", "sim0") == T0 + 2
    assert c.last_seen("m", "sim1") == T0 + 5
    assert c.last_seen("m", "sim2") is None
    assert c.last_seen("other") is None


def test_a_full_counter_forgets_the_model_asked_for_least_recently() -> None:
    c = DemandCounter(max_models=2)
    c.add("a", "sim0", T0)
    c.add("b", "sim0", T0 + 1)
    c.add("a", "sim0", T0 + 2)
    c.add("c", "sim0", T0 + 3)
    assert c.models() == ["a", "c"]
    assert c.last_seen("b") is None and c.last_seen("b", "sim0") is None


def test_a_counter_needs_a_slice_no_longer_than_its_horizon() -> None:
    with pytest.raises(ValueError):
        DemandCounter(bucket_s=0)
    with pytest.raises(ValueError):
        DemandCounter(bucket_s=60, horizon_s=10)


def test_span_reads_like_a_duration() -> None:
    assert [span(s) for s in (45, 60, 300, 90, 3600, 7200)] == [
        "45s",
        "1m",
        "5m",
        "90s",
        "1h",
        "2h",
    ]


# --- idle models --------------------------------------------------------------------


def test_models_not_asked_of_their_backend_within_the_window_are_idle() -> None:
    c = DemandCounter()
    c.add("llama3.2:1b", "sim0", T0 + 550)
    c.add("qwen2.5:0.5b", "sim0", T0 + 100)
    resident = [
        Resident("llama3.2:1b", "sim0"),  # asked 50 s ago
        Resident("llama3.2:1b", "sim1"),  # loaded there, never asked of sim1
        Resident("qwen2.5:0.5b", "sim0"),  # asked 500 s ago
        Resident("nomic-embed-text:latest", "sim0", in_flight=1),  # busy right now
    ]
    idle = idle_models(resident, c, now=T0 + 600, window_s=300, since=T0)
    assert [(m.model, m.backend) for m in idle] == [
        ("llama3.2:1b", "sim1"),
        ("qwen2.5:0.5b", "sim0"),
    ]
    assert idle[0].idle_s == 600 and idle[0].last_request_at is None
    assert idle[1].idle_s == 500 and idle[1].last_request_at == T0 + 100


def test_nothing_is_idle_before_the_window_has_passed_since_start() -> None:
    idle = idle_models([Resident("m", "sim0")], DemandCounter(), T0 + 10, 300, since=T0)
    assert idle == []


# --- recommendations ----------------------------------------------------------------


def test_copies_needed_follows_the_slot_time_in_use() -> None:
    # 2.4 requests in service on average, 1 slot a backend, 25% headroom -> 3 copies.
    busy = Demand(requests=100, busy_s=720.0, window_s=300)
    assert copies_needed(busy, slots=1, loaded=1) == 3
    assert copies_needed(busy, slots=4, loaded=1) == 1
    assert copies_needed(Demand(requests=1, busy_s=0.1), slots=1, loaded=0) == 1
    assert copies_needed(Demand(), slots=1, loaded=0) == 0


def test_requests_kept_waiting_in_the_queue_ask_for_one_more_copy() -> None:
    queued = Demand(requests=10, busy_s=30.0, waited_s=40.0, window_s=300)
    assert copies_needed(queued, slots=1, loaded=1) == 2
    assert copies_needed(queued, slots=1, loaded=1, wait_s=10.0) == 1


def test_a_model_asked_for_but_loaded_nowhere_is_recommended_for_warming() -> None:
    d = Demand(requests=12, busy_s=6.0, cold=3, window_s=300)
    holders = {
        "llama3.2:1b": [
            Holder("sim0", loaded=False, busy=0.5),
            Holder("sim1", loaded=False, busy=0.0),
            Holder("sim2", loaded=False, available=False),
        ]
    }
    [rec] = recommend({"llama3.2:1b": d}, holders)
    assert rec.action == "warm"
    assert rec.backends == ("sim1",)  # the least busy available holder
    assert rec.loaded_on == () and rec.needed == 1
    assert "asked for 12 times in the last 5m (2.4/min)" in rec.reason
    assert "loaded nowhere" in rec.reason and "3 of them waited for one" in rec.reason


def test_a_busy_model_on_too_few_backends_gets_more_copies() -> None:
    d = Demand(requests=100, busy_s=720.0, window_s=300)
    holders = {
        "m": [
            Holder("sim0", loaded=True),
            Holder("sim1", loaded=False),
            Holder("sim2", loaded=False),
            Holder("sim3", loaded=False),
        ]
    }
    [rec] = recommend({"m": d}, holders)
    assert rec.backends == ("sim1", "sim2") and rec.loaded_on == ("sim0",)
    assert rec.needed == 3
    assert "2.4 in service on average (1 slot a backend)" in rec.reason
    assert "needs 3 copies, loaded on 1" in rec.reason


def test_demand_beyond_the_holders_says_to_pull_onto_more() -> None:
    d = Demand(requests=100, busy_s=1500.0, window_s=300)
    [rec] = recommend({"m": d}, {"m": [Holder("sim0", True), Holder("sim1", False)]})
    assert rec.backends == ("sim1",) and rec.needed == 7
    assert "only 2 available backends hold it" in rec.reason


def test_a_model_nobody_holds_is_recommended_for_pulling() -> None:
    [rec] = recommend({"phi3:mini": Demand(requests=5, window_s=60)}, {})
    assert rec.action == "pull" and rec.backends == ()
    assert rec.reason == "asked for 5 times in the last 1m (5.0/min) but no backend holds it"


def test_no_recommendation_when_covered_rare_or_nothing_can_load_it() -> None:
    d = Demand(requests=10, busy_s=3.0, window_s=300)
    covered = {"m": [Holder("sim0", loaded=True), Holder("sim1", loaded=False)]}
    assert recommend({"m": d}, covered) == []
    assert recommend({"m": Demand(requests=2)}, {"m": [Holder("sim0", False)]}) == []
    # Only an OpenAI-kind server holds it: loaded while it runs, nothing to warm.
    vllm = {"m": [Holder("vllm0", loaded=True, can_load=False)]}
    assert recommend({"m": d}, vllm) == []
    # Its only holder is down: nothing could load it now.
    down = {"m": [Holder("sim0", loaded=False, available=False)]}
    assert recommend({"m": d}, down) == []


def test_recommendations_come_busiest_first() -> None:
    holders = {m: [Holder("sim0", loaded=False)] for m in ("a", "b")}
    recs = recommend({"a": Demand(requests=3), "b": Demand(requests=9)}, holders)
    assert [r.model for r in recs] == ["b", "a"]
