"""Metrics: known values for each statistic and a whole Result from records."""

from __future__ import annotations

import json

import pytest

from corral.fleetbench.metrics import (
    Collector,
    RequestRecord,
    Status,
    backlogged_tenants,
    cv,
    goodput,
    jain,
    percentile,
    prefix_hit_bound,
    weighted_service,
)
from corral.fleetbench.traces import load_mooncake
from corral.fleetbench.workload import Arrival, fixed_model, replay


def test_percentile_is_nearest_rank() -> None:
    hundred = [float(x) for x in range(100, 0, -1)]
    assert percentile(hundred, 50) == 50.0
    assert percentile(hundred, 99) == 99.0
    assert percentile(hundred, 100) == 100.0
    assert percentile(hundred, 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_jain_known_values() -> None:
    assert jain([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain([5.0, 0.0, 0.0, 0.0]) == pytest.approx(1 / 4)
    assert jain([1.0, 2.0]) == pytest.approx(9 / 10)
    assert jain([0.0, 0.0]) == 1.0


def test_goodput_and_cv() -> None:
    assert goodput([0.1, 0.5, 2.0, 0.9], slo_s=1.0, span_s=2.0) == 1.5
    assert cv([2.0, 2.0, 2.0]) == 0.0
    assert cv([1.0, 3.0]) == pytest.approx(0.5)


def _arr(prompt: int, *prefix: int) -> Arrival:
    return Arrival(0.0, "m:latest", prompt, 1, prefix=prefix)


def test_prefix_bound_on_a_hand_made_sequence() -> None:
    seq = [
        _arr(40, 1, 2, 3, 4),  # all new
        _arr(40, 1, 2, 3, 9),  # 3 leading hits
        _arr(20, 1, 5),  # 1 hit
        _arr(20, 7, 2),  # 2 is cached, but only under 1: a miss (leading blocks only)
        _arr(40, 1, 2, 3, 4),  # 4 hits
        _arr(30),  # no prefix
    ]
    # per block: (0 + 3 + 1 + 0 + 4) / (4 + 4 + 2 + 2 + 4)
    assert prefix_hit_bound(seq) == pytest.approx(8 / 16)
    # per token, 10-token blocks: a 40-token prompt may hit only (40 - 1) // 10 = 3 blocks
    assert prefix_hit_bound(seq, block_tokens=10) == pytest.approx((3 + 1 + 3) * 10 / 190)
    assert prefix_hit_bound([_arr(10), _arr(20)]) is None


def test_prefix_bound_of_the_mooncake_slice() -> None:
    arrivals = replay(load_mooncake(), models=fixed_model("m"))
    per_block = prefix_hit_bound(arrivals)
    per_token = prefix_hit_bound(arrivals, block_tokens=512)
    assert per_block is not None and per_token is not None
    assert 0.30 < per_block < 0.33 and 0.30 < per_token < 0.34
    # scaling tokens by 1/32 and using 16-token blocks keeps the figure
    small = replay(load_mooncake(), models=fixed_model("m"), prompt_scale=1 / 32)
    assert prefix_hit_bound(small, block_tokens=16) == pytest.approx(per_token, abs=0.01)


def _rec(
    t: float,
    tenant: str,
    queued: float | None,
    ttft: float | None = None,
    e2e: float | None = None,
    *,
    weight: float = 1.0,
    prompt: int = 10,
    output: int = 5,
    status: Status = "ok",
    backend: str | None = "n1",
    hit: int = 0,
) -> RequestRecord:
    return RequestRecord(
        t,
        tenant,
        weight,
        "m:latest",
        backend,
        queued,
        ttft,
        e2e,
        prompt,
        output,
        status,
        hit,
    )


def test_only_tenants_waiting_throughout_the_window_are_backlogged() -> None:
    recs = [
        _rec(0.0, "a", 6.0),
        _rec(5.0, "a", 7.0),  # a waits over [0, 12]
        _rec(0.0, "b", 4.0),
        _rec(5.0, "b", 7.0),  # gap (4, 5): not backlogged over [2, 10]
        _rec(0.0, "c", None, status="rejected", backend=None),
    ]
    assert backlogged_tenants(recs, 2.0, 10.0) == {"a"}
    assert backlogged_tenants(recs, 5.0, 10.0) == {"a", "b"}


def test_weighted_service_counts_prompt_at_dispatch_and_output_over_decoding() -> None:
    # dispatched at 2, first token at 4, done at 14: output spread over [4, 14]
    r = _rec(0.0, "a", 2.0, 4.0, 14.0, weight=2.0, prompt=100, output=50)
    service = weighted_service([r], 0.0, 9.0, tenants=["a", "z"])
    assert service == {"a": pytest.approx((100 + 2 * 50 * 0.5) / 2.0), "z": 0.0}
    assert weighted_service([r], 9.0, 20.0, tenants=["a"]) == {"a": pytest.approx(25.0)}


def test_collector_scores_a_run() -> None:
    c = Collector("least-loaded", ttft_slo_s=1.0, fairness_windows=[(0.0, 10.0)])
    # two tenants backlogged over [0, 10] with weights 1 and 2; b gets twice the service
    for i in range(10):
        c.add(_rec(0.0, "a", float(i + 1), i + 1.5, i + 1.5, prompt=100, output=0, backend="n1"))
        c.add(
            _rec(
                0.0,
                "b",
                float(i + 1),
                i + 1.5,
                i + 1.5,
                weight=2,
                prompt=200,
                output=0,
                backend="n2",
            )
        )
    c.add(_rec(3.0, "c", None, status="rejected", backend=None))
    c.add(_rec(4.0, "c", 1.0, status="failed"))
    res = c.result(model_loads=3, prefix_hit_bound=0.4, backends=["n1", "n2", "n3"])
    assert res.policy == "least-loaded"
    assert res.completed == 20 and res.rejected == 1 and res.failed == 1
    assert res.p50_ttft_s == 5.5 and res.p99_ttft_s == 10.5 and res.p99_e2e_s == 10.5
    assert res.span_s == 10.5
    assert res.goodput_rps == 0.0  # every TTFT is over 1 s
    assert res.jain == pytest.approx(1.0) and res.jain_windows == [pytest.approx(1.0)]
    assert res.load_cv == pytest.approx(cv([10, 10, 0]))
    assert res.prefix_hit_rate == 0.0 and res.prefix_hit_bound == 0.4
    assert res.p99_queue_wait_s == {"a": 10.0, "b": 10.0, "c": 1.0}
    out = json.loads(res.to_json())
    for key in (
        "policy", "p50_ttft_s", "p99_ttft_s", "p99_e2e_s", "goodput_rps", "model_loads",
        "prefix_hit_rate", "prefix_hit_bound", "jain", "rejected", "failed",
    ):  # fmt: skip
        assert key in out
    assert out["model_loads"] == 3


def test_an_unfair_split_lowers_jain_and_an_empty_run_reports_nulls() -> None:
    c = Collector("fifo", ttft_slo_s=2.0, fairness_windows=[(0.0, 10.0)])
    for i in range(10):
        c.add(_rec(0.0, "a", float(i + 1), i + 1.5, i + 1.5, prompt=300, output=0, hit=150))
    c.add(_rec(0.0, "b", 20.0, 20.5, 21.0, prompt=100, output=0))
    res = c.result()
    assert res.prefix_hit_rate == pytest.approx(1500 / 3100)
    assert res.jain == pytest.approx(0.5)  # b was served only after the window
    assert res.goodput_rps == pytest.approx(1 / 21.0)
    empty = Collector("x", ttft_slo_s=1.0).result()
    assert (empty.p50_ttft_s, empty.jain, empty.prefix_hit_rate) == (None, None, None)
    assert json.loads(empty.to_json())["p99_e2e_s"] is None
