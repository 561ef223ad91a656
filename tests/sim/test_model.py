"""The pure node model in virtual time: Ollama's scheduling rules, one by one."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from corral.sim.catalogue import Catalogue
from corral.sim.model import (
    FOREVER,
    Admission,
    Event,
    EventKind,
    Kind,
    NodeConfig,
    NodeModel,
    Request,
)

CAT = Catalogue.builtin()
EXACT = NodeConfig(jitter=0.0, token_chunk=0)
SMALL = ["llama3.2:1b", "qwen2.5:0.5b", "qwen2.5:1.5b", "llama3.2:3b", "gemma3:4b"]


def node(config: NodeConfig = EXACT, models: list[str] | None = None) -> NodeModel:
    return NodeModel(config, [CAT.get(m) for m in (models or SMALL)])


def run(n: NodeModel, until: float = math.inf) -> list[Event]:
    """Drive virtual time from event to event."""
    out: list[Event] = []
    while (t := n.next_event_time()) is not None and t <= until:
        out.extend(n.advance(t))
    if until < math.inf:
        out.extend(n.advance(until))
    return out


def gen(req_id: int, model: str = "llama3.2:1b", **kw: object) -> Request:
    fields: dict[str, object] = {"prompt_tokens": 100, "output_tokens": 50, **kw}
    return Request(req_id, model, **fields)  # type: ignore[arg-type]


def done(events: list[Event], req_id: int) -> Event:
    return next(e for e in events if e.req_id == req_id and e.kind is EventKind.DONE)


def first(events: list[Event], req_id: int) -> Event:
    return next(e for e in events if e.req_id == req_id and e.kind is EventKind.FIRST_TOKEN)


def of(events: list[Event], kind: EventKind) -> list[tuple[float, str]]:
    return [(round(e.time, 6), e.model) for e in events if e.kind is kind]


def load_time(model: str, config: NodeConfig = EXACT) -> float:
    return config.load_base_s + CAT.get(model).size_bytes / config.load_bytes_per_s


def test_request_for_resident_model_runs_at_once_with_no_load_time() -> None:
    n = node()
    n.preload("llama3.2:1b", 0.0)
    assert n.submit(gen(1), 0.0) is Admission.RUNNING
    ev = done(run(n), 1)
    spec = CAT.get("llama3.2:1b")
    assert ev.metrics is not None
    assert ev.metrics.load_duration == 0.0
    assert ev.metrics.prompt_eval_duration == pytest.approx(100 / spec.prompt_tps)
    assert ev.metrics.eval_duration == pytest.approx(50 / spec.gen_tps)
    assert ev.metrics.eval_count == 50 and ev.metrics.prompt_eval_count == 100
    assert ev.done_reason == "stop"


def test_cold_request_waits_for_a_load_that_grows_with_model_size() -> None:
    n = node()
    assert n.submit(gen(1), 0.0) is Admission.LOADING
    assert n.submit(gen(2, "gemma3:4b"), 100.0) is Admission.LOADING
    events = run(n)
    small, big = done(events, 1).metrics, done(events, 2).metrics
    assert small is not None and big is not None
    assert small.load_duration == pytest.approx(load_time("llama3.2:1b"))
    assert big.load_duration == pytest.approx(load_time("gemma3:4b"))
    assert big.load_duration > small.load_duration
    assert small.total_duration == pytest.approx(
        small.load_duration + small.prompt_eval_duration + small.eval_duration
    )


def test_one_model_loads_at_a_time() -> None:
    n = node()
    for i, model in enumerate(["llama3.2:1b", "qwen2.5:0.5b", "llama3.2:3b"]):
        n.submit(gen(i, model), 0.0)
    events = run(n)
    starts = of(events, EventKind.LOAD_STARTED)
    loaded = of(events, EventKind.LOADED)
    assert [m for _, m in starts] == ["llama3.2:1b", "qwen2.5:0.5b", "llama3.2:3b"]
    # Each load starts only when the previous one finished.
    for (t_start, _), (t_prev_done, _) in zip(starts[1:], loaded, strict=False):
        assert t_start == pytest.approx(t_prev_done)


def _three_idle(keep_alives: dict[str, float], config: NodeConfig = EXACT) -> NodeModel:
    n = node(config)
    for i, (model, ka) in enumerate(keep_alives.items()):
        n.submit(gen(i, model, keep_alive=ka), 0.0)
    run(n, until=60.0)
    assert len(n.runners(60.0)) == 3
    return n


def test_eviction_takes_the_idle_runner_with_the_shortest_keep_alive_not_lru() -> None:
    # qwen2.5:0.5b was used last but has the shortest keep-alive: it goes first.
    n = _three_idle({"llama3.2:1b": 3600.0, "llama3.2:3b": 1800.0, "qwen2.5:0.5b": 600.0})
    n.submit(gen(9, "gemma3:4b"), 60.0)
    events = run(n, until=120.0)
    assert of(events, EventKind.UNLOADED)[0][1] == "qwen2.5:0.5b"
    assert done(events, 9).metrics is not None
    assert sorted(r.model for r in n.runners(120.0)) == ["gemma3:4b", "llama3.2:1b", "llama3.2:3b"]


def test_eviction_ties_break_by_name_and_forever_goes_last() -> None:
    n = _three_idle({"qwen2.5:0.5b": FOREVER, "llama3.2:3b": 900.0, "llama3.2:1b": 900.0})
    n.submit(gen(9, "gemma3:4b"), 60.0)
    n.submit(gen(10, "qwen2.5:1.5b"), 60.0)
    unloaded = [m for _, m in of(run(n, until=200.0), EventKind.UNLOADED)]
    assert unloaded == ["llama3.2:1b", "llama3.2:3b"]


def test_busy_runners_are_evicted_only_once_they_drain() -> None:
    n = node(replace(EXACT, max_loaded_models=1))
    n.preload("llama3.2:1b", 0.0)
    n.submit(gen(1, output_tokens=400), 0.0)
    n.submit(gen(2, "qwen2.5:0.5b"), 0.0)
    events = run(n)
    busy_done = done(events, 1).time
    ((t_unload, model),) = of(events, EventKind.UNLOADED)[:1]
    assert model == "llama3.2:1b"
    assert t_unload >= busy_done
    assert of(events, EventKind.LOAD_STARTED)[0][0] >= t_unload


def test_vram_budget_forces_an_eviction() -> None:
    two_models = CAT.get("llama3.2:3b").vram_bytes + CAT.get("gemma3:4b").vram_bytes
    n = node(replace(EXACT, vram_bytes=two_models))  # KV caches tip it over
    n.submit(gen(1, "llama3.2:3b"), 0.0)
    n.submit(gen(2, "gemma3:4b"), 0.0)
    events = run(n)
    assert [m for _, m in of(events, EventKind.UNLOADED)][:1] == ["llama3.2:3b"]
    assert done(events, 2).metrics is not None


def test_a_model_larger_than_vram_still_loads_partly_offloaded_and_slower() -> None:
    spec = CAT.get("llama3.1:8b")
    n = node(replace(EXACT, vram_bytes=spec.vram_bytes // 2), ["llama3.1:8b"])
    n.submit(gen(1, "llama3.1:8b"), 0.0)
    events = run(n, until=100.0)
    m = done(events, 1).metrics
    assert m is not None
    runner = n.runners(100.0)[0]
    assert runner.size_vram < runner.size_bytes
    assert m.eval_duration > 50 / spec.gen_tps * 2


def test_load_queue_full_answers_busy_but_resident_models_queue_without_limit() -> None:
    n = node(replace(EXACT, max_queue=2))
    n.preload("gemma3:4b", 0.0)
    assert n.submit(gen(1, "llama3.2:1b"), 0.0) is Admission.LOADING  # being loaded
    assert n.submit(gen(2, "qwen2.5:0.5b"), 0.0) is Admission.LOADING  # queued 1/2
    assert n.submit(gen(3, "qwen2.5:1.5b"), 0.0) is Admission.LOADING  # queued 2/2
    assert n.submit(gen(4, "llama3.2:3b"), 0.0) is Admission.BUSY
    # Waiting for the model already loading does not take a scheduler place.
    assert n.submit(gen(5, "llama3.2:1b"), 0.0) is Admission.LOADING
    admissions = {n.submit(gen(100 + i, "gemma3:4b"), 0.0) for i in range(1000)}
    assert admissions == {Admission.RUNNING, Admission.QUEUED}
    assert n.stats.busy == 1
    assert n.pending_loads == 4


def test_num_parallel_slots_then_fifo_queue() -> None:
    n = node(replace(EXACT, num_parallel=2))
    n.preload("llama3.2:1b", 0.0)
    adm = [n.submit(gen(i), 0.0) for i in range(3)]
    assert adm == [Admission.RUNNING, Admission.RUNNING, Admission.QUEUED]
    events = run(n)
    assert first(events, 2).time > done(events, 0).time - 1e-9
    assert done(events, 2).metrics is not None


def test_embedding_models_get_one_slot_whatever_num_parallel() -> None:
    n = node(replace(EXACT, num_parallel=4), ["nomic-embed-text"])
    n.preload("nomic-embed-text", 0.0)
    reqs = [Request(i, "nomic-embed-text", Kind.EMBED, prompt_tokens=500) for i in range(2)]
    assert [n.submit(r, 0.0) for r in reqs] == [Admission.RUNNING, Admission.QUEUED]


def test_idle_runner_expires_after_its_keep_alive() -> None:
    n = node()
    n.submit(gen(1, keep_alive=60.0), 0.0)
    events = run(n)
    t_done = done(events, 1).time
    ((t_unload, _),) = of(events, EventKind.UNLOADED)
    assert t_unload == pytest.approx(t_done + 60.0 + EXACT.unload_s)
    assert n.next_event_time() is None


def test_keep_alive_zero_unloads_right_after_and_forever_never_expires() -> None:
    n = node()
    n.submit(gen(1, keep_alive=0.0), 0.0)
    n.submit(gen(2, "qwen2.5:0.5b", keep_alive=FOREVER), 0.0)
    events = run(n)
    assert [m for _, m in of(events, EventKind.UNLOADED)] == ["llama3.2:1b"]
    assert of(events, EventKind.UNLOADED)[0][0] == pytest.approx(
        done(events, 1).time + EXACT.unload_s
    )
    assert [r.model for r in n.runners(1e9)] == ["qwen2.5:0.5b"]
    assert n.runners(1e9)[0].expires_at == FOREVER


def test_request_keep_alive_overrides_and_a_request_without_one_keeps_it() -> None:
    n = node()
    n.submit(gen(1, keep_alive=30.0), 0.0)
    run(n, until=10.0)
    n.submit(gen(2), 10.0)  # no keep_alive: the runner keeps 30 s, not the 5 min default
    events = run(n)
    ((t_unload, _),) = of(events, EventKind.UNLOADED)
    assert t_unload == pytest.approx(done(events, 2).time + 30.0 + EXACT.unload_s)


def test_empty_prompt_loads_and_keep_alive_zero_unloads() -> None:
    n = node()
    assert n.submit(Request(1, "llama3.2:1b", Kind.LOAD), 0.0) is Admission.LOADING
    events = run(n, until=30.0)
    load = done(events, 1)
    assert load.done_reason == "load"
    assert load.metrics is not None and load.metrics.load_duration > 0
    assert n.submit(Request(2, "llama3.2:1b", Kind.UNLOAD, keep_alive=0.0), 30.0) is Admission.DONE
    events = run(n, until=40.0)
    assert done(events, 2).done_reason == "unload"
    assert of(events, EventKind.UNLOADED) and n.runners(40.0) == []


def test_a_different_num_ctx_forces_a_reload() -> None:
    n = node()
    n.preload("llama3.2:1b", 0.0)
    assert n.runners(0.0)[0].num_ctx == 4096
    assert n.submit(gen(1, num_ctx=8192), 0.0) is Admission.LOADING
    events = run(n, until=100.0)
    assert [k for k in (e.kind for e in events) if k is not EventKind.FIRST_TOKEN][:3] == [
        EventKind.UNLOADED,
        EventKind.LOAD_STARTED,
        EventKind.LOADED,
    ]
    assert n.runners(100.0)[0].num_ctx == 8192
    assert n.submit(gen(2, num_ctx=8192), 100.0) is Admission.RUNNING


def test_rates_slow_per_request_but_aggregate_throughput_grows_sublinearly() -> None:
    solo = node(replace(EXACT, num_parallel=4))
    solo.preload("llama3.2:1b", 0.0)
    solo.submit(gen(1, output_tokens=200), 0.0)
    alone = done(run(solo), 1).metrics
    crowd = node(replace(EXACT, num_parallel=4))
    crowd.preload("llama3.2:1b", 0.0)
    for i in range(4):
        crowd.submit(gen(i, output_tokens=200), 0.0)
    shared = done(run(crowd), 0).metrics
    assert alone is not None and shared is not None
    speedup = 4 * alone.eval_duration / shared.eval_duration  # aggregate vs one stream
    assert shared.eval_duration > alone.eval_duration
    assert 1.5 < speedup < 4
    assert speedup == pytest.approx(4**EXACT.concurrency_exponent)


def test_cancel_frees_the_slot_at_once_and_is_counted() -> None:
    n = node()
    n.preload("llama3.2:1b", 0.0)
    n.submit(gen(1, output_tokens=1000), 0.0)
    assert n.submit(gen(2), 0.0) is Admission.QUEUED
    run(n, until=1.0)
    assert n.cancel(1, 1.0) is True
    assert n.runners(1.0)[0].active == 1
    events = run(n)
    assert not any(e.req_id == 1 and e.kind is EventKind.DONE for e in events)
    m = done(events, 2).metrics
    assert m is not None and done(events, 2).time == pytest.approx(
        1.0 + m.prompt_eval_duration + m.eval_duration
    )
    assert n.stats.cancelled == 1 and n.in_flight == 0
    assert n.cancel(1, 5.0) is False


def test_cancelling_the_only_request_of_a_load_aborts_the_load() -> None:
    n = node()
    n.submit(gen(1), 0.0)
    n.cancel(1, 0.5)
    events = run(n)
    assert [e.done_reason for e in events if e.kind is EventKind.UNLOADED] == ["aborted"]
    assert n.runners(10.0) == [] and n.next_event_time() is None


def test_not_present_model_is_not_found() -> None:
    n = node()
    assert n.submit(gen(1, "mistral:7b"), 0.0) is Admission.NOT_FOUND
    assert n.stats.not_found == 1


def test_token_chunk_sets_event_granularity() -> None:
    for chunk, expected in ((0, [1]), (10, [1, 11, 21, 31, 41])):
        n = node(replace(EXACT, token_chunk=chunk))
        n.preload("llama3.2:1b", 0.0)
        n.submit(gen(1, output_tokens=50), 0.0)
        events = run(n)
        counts = [e.tokens for e in events if e.kind in (EventKind.FIRST_TOKEN, EventKind.TOKENS)]
        assert counts == expected
        assert done(events, 1).tokens == 50


def test_zero_delay_answers_at_the_submit_time() -> None:
    n = node(replace(EXACT, zero_delay=True))
    n.submit(gen(1), 5.0)
    n.submit(gen(2, "qwen2.5:0.5b"), 5.0)
    events = run(n, until=5.0)
    assert {e.time for e in events} == {5.0}
    assert done(events, 1).metrics is not None
    m = done(events, 2).metrics
    assert m is not None and m.total_duration == 0.0 and m.eval_count == 50


def test_speed_and_slowdown_scale_durations_but_not_keep_alive() -> None:
    base = node()
    base.submit(gen(1), 0.0)
    fast = node(replace(EXACT, speed=10.0))
    fast.submit(gen(1), 0.0)
    slow = node()
    slow.set_slowdown(3.0, 0.0)
    slow.submit(gen(1), 0.0)
    b, f, s = (done(run(x, until=100.0), 1).metrics for x in (base, fast, slow))
    assert b is not None and f is not None and s is not None
    assert f.total_duration == pytest.approx(b.total_duration / 10)
    assert s.total_duration == pytest.approx(b.total_duration * 3)
    assert fast.runners(100.0)[0].expires_at == pytest.approx(f.total_duration + 300)


def _trace(seed: int) -> list[tuple[float, str, object]]:
    n = node(replace(EXACT, jitter=0.1, seed=seed, num_parallel=2, token_chunk=5))
    for i in range(6):
        n.submit(gen(i, SMALL[i % 3], output_tokens=20 + i), i * 0.3)
    return [(e.time, e.kind.value, e.req_id) for e in run(n)]


def test_same_seed_same_events_and_another_seed_differs() -> None:
    assert _trace(7) == _trace(7)
    assert _trace(7) != _trace(8)


def test_num_ctx_is_capped_at_the_models_context_length() -> None:
    n = node(models=["nomic-embed-text"])
    n.submit(Request(1, "nomic-embed-text", Kind.EMBED, prompt_tokens=9000, num_ctx=32768), 0.0)
    events = run(n, until=50.0)
    assert n.runners(50.0)[0].num_ctx == 2048
    m = done(events, 1).metrics
    assert m is not None and m.prompt_eval_count == 2048 and m.eval_count == 0


def test_requests_arriving_during_a_load_join_it_without_a_second_load() -> None:
    n = node(replace(EXACT, num_parallel=2))
    for i in range(5):
        n.submit(gen(i), i * 0.1)
    assert n.pending_loads == 5 and n.in_flight == 5
    events = run(n)
    assert n.stats.loads == 1 and n.stats.completed == 5
    assert len({round(first(events, i).time, 9) for i in range(2)}) == 1  # both slots at once
