"""The fleet benchmark's event loop: determinism, conservation, slots, faults, CLI."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from corral.fleetbench import des
from corral.fleetbench.arrivals import build_arrivals
from corral.fleetbench.cli import app
from corral.fleetbench.des import Simulation, simulate
from corral.fleetbench.scenario import SCENARIOS, Fault, load_scenario, parse_scenario

SMALL = 200


def _run(name: str, policy: str = "least_conn", n: int = SMALL, seed: int = 3) -> des.Run:
    sc = load_scenario(name)
    return simulate(sc, policy, build_arrivals(sc, seed=seed, requests=n), seed=seed)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_shipped_scenario_loads_and_runs_small(name: str) -> None:
    run = _run(name)
    statuses = Counter(r.status for r in run.records)
    assert run.extras["arrivals"] == len(run.records)
    assert statuses["ok"] > 0
    assert run.result.completed == statuses["ok"]


def test_same_seed_gives_identical_results() -> None:
    a = _run("multi-model", "corral", seed=5).to_dict()
    b = _run("multi-model", "corral", seed=5).to_dict()
    assert a == b
    c = _run("multi-model", "corral", seed=6).to_dict()
    assert c != a


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_arrival_ends_exactly_once(name: str) -> None:
    sc = load_scenario(name)
    arrivals = build_arrivals(sc, seed=2, requests=SMALL)
    run = simulate(sc, "round_robin", arrivals, seed=2)
    assert len(run.records) == len(arrivals)
    assert sorted(r.t for r in run.records) == sorted(a.t for a in arrivals)
    assert {r.status for r in run.records} <= {"ok", "rejected", "failed"}
    ok = [r for r in run.records if r.status == "ok"]
    assert all(r.ttft_s is not None and r.e2e_s is not None and r.e2e_s >= r.ttft_s for r in ok)


def test_the_scheduler_never_exceeds_a_backends_slots() -> None:
    sc = load_scenario("multi-model")
    arrivals = build_arrivals(sc, seed=1, requests=400)
    sim = Simulation(sc, "corral", arrivals, seed=1)
    worst: dict[str, int] = {}
    dispatch = sim._dispatch

    def watch(ticket: des.Ticket, now: float) -> None:
        for name, state in sim.sched.backends.items():
            worst[name] = max(worst.get(name, 0), state.in_flight)
            for count in state.in_flight_by_model.values():
                assert state.max_per_model is None or count <= state.max_per_model
        dispatch(ticket, now)

    sim._dispatch = watch  # type: ignore[method-assign]
    run = sim.run()
    assert run.extras["max_in_flight_excess"] == 0
    for spec in sc.nodes:
        assert 0 < worst[spec.name] <= spec.max_concurrency
    # Nor does a node hold more than the gateway gave it.
    assert all(node.in_flight == 0 for node in sim.nodes.values())


def test_a_flapping_node_fails_no_request_that_was_not_yet_streaming() -> None:
    # Per-request attempts only: the gateway-wide retry budget is a separate limit
    # (see test_the_retry_budget_caps_retries_during_an_outage).
    flapping = load_scenario("flapping")
    sc = replace(flapping, gateway=replace(flapping.gateway, retry_budget=None))
    arrivals = build_arrivals(sc, seed=1, requests=600)
    for policy in ("corral", "least_conn"):
        run = simulate(sc, policy, arrivals, seed=1)
        failed = [r for r in run.records if r.status == "failed"]
        # Only requests cut off mid-stream may fail (a streaming answer cannot be
        # replayed); everything else was retried elsewhere.
        assert run.extras["failed_before_stream"] == 0
        assert len(failed) == run.extras["failed_mid_stream"]
        assert run.extras["retries"] > 0
        assert all(r.ttft_s is not None for r in failed)


def test_the_retry_budget_caps_retries_during_an_outage() -> None:
    flapping = load_scenario("flapping")
    arrivals = build_arrivals(flapping, seed=1, requests=600)
    tight = replace(flapping, gateway=replace(flapping.gateway, retry_budget=0.0))
    loose = replace(flapping, gateway=replace(flapping.gateway, retry_budget=None))
    capped = simulate(tight, "least_conn", arrivals, seed=1)
    free = simulate(loose, "least_conn", arrivals, seed=1)
    assert capped.extras["retries"] < free.extras["retries"]
    assert capped.extras["failed_before_stream"] > free.extras["failed_before_stream"] == 0


def test_a_node_that_goes_down_loses_its_streams_and_its_loaded_models() -> None:
    sc = load_scenario("flapping")
    one_outage = replace(sc, faults=(Fault("ollama-1", "down", 0.3, 0.5),))
    arrivals = build_arrivals(sc, seed=4, requests=400)
    sim = Simulation(one_outage, "least_conn", arrivals, seed=4)
    run = sim.run()
    node = sim.nodes["ollama-1"]
    assert run.extras["failed_mid_stream"] > 0  # it was serving when it fell
    assert node.model_loads > 0  # it came back empty and had to load again
    late = [r for r in run.records if r.backend == "ollama-1" and r.t > arrivals[-1].t * 0.6]
    assert late, "the recovered node got traffic again after a probe"


def test_a_busy_node_answers_503_and_requests_go_elsewhere() -> None:
    sc = load_scenario("flapping")
    busy = replace(sc, faults=(Fault("ollama-3", "busy", 0.0, 1.0),))
    run = simulate(busy, "least_conn", build_arrivals(sc, seed=1, requests=300), seed=1)
    assert run.result.failed == 0
    assert run.extras["retries"] > 0
    assert not [r for r in run.records if r.backend == "ollama-3"]


def test_shared_prefix_on_vllm_reports_hits_under_the_infinite_cache_bound() -> None:
    run = _run("shared-prefix", "corral", n=300)
    res = run.result
    assert res.prefix_hit_bound is not None and res.prefix_hit_rate is not None
    assert 0 < res.prefix_hit_rate <= res.prefix_hit_bound + 1e-9
    assert run.extras["inflight_cv"] is not None
    assert res.model_loads == 0  # a vLLM server serves its one model, always loaded


def test_tenants_phase_one_is_weighted_fair() -> None:
    run = _run("tenants", "least_conn", n=600)
    assert run.result.jain is not None and run.result.jain >= 0.9
    tenants = {r.tenant for r in run.records}
    assert tenants == {"a", "b", "c"}


def test_a_scenario_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        parse_scenario({"nodes": [{"name": "n", "models": ["x"], "vram": 3}]})
    with pytest.raises(ValueError, match="unknown node"):
        parse_scenario(
            {
                "nodes": [{"name": "n", "models": ["llama3.2:1b"]}],
                "faults": [{"node": "m", "kind": "down", "start": 0.1, "end": 0.2}],
            }
        )


def test_cli_prints_one_json_object_per_policy() -> None:
    result = CliRunner().invoke(
        app,
        [
            "fleet",
            "--scenario",
            "tenants",
            "--requests",
            "150",
            "--policy",
            "corral",
            "--policy",
            "least_conn",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.output.splitlines()]
    assert [o["policy"] for o in objects] == ["corral", "least_conn"]
    fields = [
        "p50_ttft_s",
        "p99_ttft_s",
        "p99_e2e_s",
        "goodput_rps",
        "model_loads",
        "prefix_hit_rate",
        "prefix_hit_bound",
        "jain",
        "rejected",
        "failed",
    ]
    for o in objects:
        assert set(fields) <= set(o)
        assert o["scenario"] == "tenants"


def test_cli_table_and_target_lines() -> None:
    result = CliRunner().invoke(
        app, ["fleet", "-s", "multi-model", "-n", "150", "-p", "corral", "-p", "least_conn"]
    )
    assert result.exit_code == 0, result.output
    assert "multi-model" in result.output
    assert "least_conn" in result.output
    assert "model loads <=" in result.output


def test_cli_refuses_an_unknown_scenario_or_policy() -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["fleet", "--scenario", "nope"])
    assert bad.exit_code != 0
    assert "nope" in bad.output
    bad = runner.invoke(app, ["fleet", "--scenario", "tenants", "--policy", "nope"])
    assert bad.exit_code != 0
