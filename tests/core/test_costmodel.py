"""The default ``corral`` policy: lowest estimated time to first token."""

from __future__ import annotations

from collections import Counter

from corral.core.costmodel import CorralPolicy
from corral.core.scheduler import Scheduler
from corral.core.types import BackendState, EngineSignals, Outcome, RequestInfo

M = "m:latest"
GB = 10**9
INF = float("inf")


def node(
    name: str,
    *,
    loaded: bool = True,
    slots: int = 4,
    busy: int = 0,
    size: int = 4 * GB,
    **kw: object,
) -> BackendState:
    b = BackendState(
        name,
        f"http://{name}",
        max_concurrency=slots,
        healthy=True,
        models=frozenset({M}),
        **kw,  # type: ignore[arg-type]
    )
    b.model_bytes[M] = size
    if loaded:
        b.loaded[M] = INF
    b.in_flight = busy
    if busy:
        b.in_flight_by_model[M] = busy
    return b


def req(i: int = 0, model: str = M, **kw: object) -> RequestInfo:
    return RequestInfo(model, "/api/chat", request_id=f"r{i}", **kw)  # type: ignore[arg-type]


def test_prefers_a_busier_node_with_the_model_loaded_over_an_idle_one_that_must_load() -> None:
    p = CorralPolicy()
    cold, warm = node("cold", loaded=False, size=GB // 10), node("warm", busy=3)
    chosen, reason = p.select([cold, warm], req(), 0.0)
    assert chosen is warm
    assert reason.startswith("corral: est ttft") and "loaded, 3/4 busy" in reason
    assert "load 1.2s" in reason  # the runner-up's load: 1 s + 0.1 GB at 0.5 GB/s


def test_never_loads_beside_an_idle_loaded_copy_even_when_the_estimate_says_so() -> None:
    p = CorralPolicy()
    cold, warm = node("cold", loaded=False, size=GB // 10), node("warm")
    for t in range(10):  # warm keeps failing: its estimate is worse than a 1.2 s load
        p.on_complete(warm, req(t), Outcome(ok=False), float(t))
    assert p.select([cold, warm], req(), 10.0)[0] is warm


def test_waits_for_a_loaded_busy_node_rather_than_load_a_10gb_model() -> None:
    s = Scheduler(CorralPolicy(), max_waiting=10)
    s.add_backend(node("warm", slots=1))
    s.add_backend(node("cold", loaded=False, size=10 * GB))
    s.set_models("warm", [M])
    s.set_models("cold", [M])
    first = s.submit(req(1), 0.0, 60.0)
    assert first.decision is not None and first.decision.backend == "warm"
    second = s.submit(req(2), 0.1, 60.0)
    assert second.decision is None  # queued: waiting beats a 21 s load
    assert s.release(first, Outcome(ok=True, ttft_s=0.1, duration_s=2.0), 2.0) == [second]
    assert second.decision is not None and second.decision.backend == "warm"


def test_a_long_line_for_a_busy_node_spills_onto_a_node_that_loads_a_small_model() -> None:
    p = CorralPolicy()
    warm, cold = node("warm", slots=1, busy=1), node("cold", loaded=False, size=GB)
    assert p.select([warm, cold], req(1), 0.0)[0] is warm  # wait ~2 s < 3 s load
    chosen, reason = p.select([warm, cold], req(2), 0.0)  # one ahead: wait ~4 s
    assert chosen is cold
    assert "load 3.0s" in reason


def test_learns_load_time_from_reported_load_durations() -> None:
    p = CorralPolicy()
    warm, cold = node("warm", slots=1, busy=1), node("cold", loaded=False, size=10 * GB)
    assert p.select([warm, cold], req(1), 0.0)[0] is warm  # 21 s load by size
    for t in range(5):
        p.on_complete(cold, req(t), Outcome(ok=True, ttft_s=1.6, load_s=1.5), float(t))
    cold.last_check_at = 10.0  # a probe since: it was unloaded again
    chosen, reason = p.select([warm, cold], req(2), 11.0)
    assert chosen is cold
    assert "load 1.5s" in reason


def test_a_second_request_joins_the_load_under_way_instead_of_starting_another() -> None:
    p = CorralPolicy()
    a, b = node("a", loaded=False, size=4 * GB), node("b", loaded=False, size=4 * GB)
    first, _ = p.select([a, b], req(1), 0.0)
    first.in_flight += 1
    first.in_flight_by_model[M] = 1
    p.on_dispatch(first, req(1), 0.0)
    chosen, reason = p.select([a, b], req(2), 2.0)
    assert chosen is first
    assert "loading, 7.0s left" in reason


def test_a_load_that_evicts_a_model_in_use_loses_to_one_that_fits() -> None:
    p = CorralPolicy()
    full = node("full", loaded=False)
    for other in ("x:latest", "y:latest", "z:latest"):  # Ollama's default limit: 3
        full.loaded[other] = INF
        full.model_bytes[other] = 4 * GB
        p.on_complete(full, req(model=other), Outcome(ok=True, ttft_s=0.1), 0.0)
    full.in_flight = full.in_flight_by_model["x:latest"] = 1
    roomy = node("roomy", loaded=False, busy=1)
    roomy.in_flight_by_model.clear()
    chosen, reason = p.select([full, roomy], req(), 10.0)
    assert chosen is roomy
    assert "evict 9.0s" in reason  # the runner-up's: a recent model, its only copy


def test_evicting_an_idle_model_nobody_used_lately_costs_nothing() -> None:
    p = CorralPolicy()
    full = node("full", loaded=False)
    for other in ("x:latest", "y:latest", "z:latest"):
        full.loaded[other] = INF
    roomy = node("roomy", loaded=False, busy=1)
    roomy.in_flight_by_model.clear()
    assert p.select([full, roomy], req(), 1000.0)[0] is full  # idle beats busy


def test_vram_decides_what_fits_when_it_is_known() -> None:
    p = CorralPolicy()
    small = node("small", loaded=False, vram_bytes=8 * GB)
    small.loaded["x:latest"] = INF
    small.model_bytes["x:latest"] = 6 * GB
    p.on_complete(small, req(model="x:latest"), Outcome(ok=True, ttft_s=0.1), 0.0)  # in use
    big = node("big", loaded=False, vram_bytes=80 * GB)
    for other in ("p:latest", "q:latest", "r:latest"):  # more than 3 models, but room
        big.loaded[other] = INF
    assert p.select([small, big], req(), 1.0)[0] is big


def test_a_backend_whose_success_rate_falls_loses_traffic_and_wins_it_back_later() -> None:
    p = CorralPolicy()
    a, b = node("a"), node("b", busy=2)
    assert p.select([a, b], req(), 0.0)[0] is a
    for t in range(4):
        p.on_complete(a, req(t), Outcome(ok=False), float(t))
    picks = Counter(p.select([a, b], req(i), 5.0)[0].name for i in range(10))
    assert picks == {"b": 10}
    assert "(loaded, 0/4 busy, ok 0.2" in p.select([a, b], req(), 5.0)[1]
    assert p.select([a, b], req(), 5.0 + 10 * 60.0)[0] is a  # no news: trusted again


def test_a_vllm_node_with_a_full_kv_cache_and_a_queue_loses_to_an_idle_one() -> None:
    p = CorralPolicy()
    hot = node(
        "hot", kind="openai", slots=64, signals=EngineSignals(waiting=20, kv_cache_usage=0.95)
    )
    idle = node("idle", kind="openai", slots=64, busy=8, signals=EngineSignals(running=8))
    chosen, reason = p.select([hot, idle], req(prompt_tokens=500), 0.0)
    assert chosen is idle
    assert "kv 0.95, 20 waiting" in reason


def test_openai_backends_count_as_loaded_without_a_probe() -> None:
    p = CorralPolicy()
    vllm = node("vllm", loaded=False, kind="openai", busy=2)
    ollama = node("ollama", loaded=False)
    assert p.select([ollama, vllm], req(), 0.0)[0] is vllm


def test_a_completed_request_marks_the_model_resident_until_the_next_probe() -> None:
    p = CorralPolicy()
    a, b = node("a", loaded=False, busy=1), node("b", loaded=False)
    a.in_flight_by_model.clear()
    a.last_check_at = 0.0
    p.on_complete(a, req(), Outcome(ok=True, ttft_s=0.1), 1.0)
    assert p.select([b, a], req(), 2.0)[0] is a
    a.last_check_at = 3.0  # the probe says it is gone
    assert p.select([b, a], req(), 4.0)[0] is b


def test_backend_removal_forgets_what_was_learned() -> None:
    p = CorralPolicy()
    a = node("a", loaded=False)
    p.on_complete(a, req(), Outcome(ok=True, ttft_s=0.1, load_s=3.0), 0.0)
    p.on_backend_removed("a")
    assert p.stats.get("a", M) is None
    assert p.loads.load_time(a, M, None) == 1.0 + 4 * GB / 0.5e9


def test_reason_is_header_safe_and_names_the_runner_up_cost() -> None:
    p = CorralPolicy()
    long_name = "backend-" + "z" * 300
    a, b = node(long_name), node("b", loaded=False)
    chosen, reason = p.select([a, b], req(), 0.0)
    assert chosen is a
    assert reason.isascii() and "\n" not in reason and len(reason) < 160
    assert reason == "corral: est ttft 0.02s (loaded, 0/4 busy) vs next 9.02s (load 9.0s)"


def test_a_model_a_load_pushes_out_is_not_sent_more_work_until_a_probe_says_so() -> None:
    p = CorralPolicy()
    full = node("full", loaded=False, size=GB)
    for other in ("x:latest", "y:latest", "z:latest"):
        full.loaded[other] = INF
        full.model_bytes[other] = GB
    full.in_flight = full.in_flight_by_model["x:latest"] = 1
    full.in_flight += 1
    full.in_flight_by_model[M] = 1
    p.on_dispatch(full, req(), 0.0)  # loading m pushes out y (idle, first by name)
    y = "y:latest"
    _, reason = p.select([full], req(1, model=y), 1.0)
    assert "load" in reason and "loaded" not in reason
    assert "loaded" in p.select([full], req(2, model="z:latest"), 1.0)[1]
    full.last_check_at = 60.0  # a probe after the load: y is still listed, so it stayed
    assert "loaded" in p.select([full], req(3, model=y), 61.0)[1]


def test_a_long_queue_for_the_model_makes_loading_another_copy_pay() -> None:
    p = CorralPolicy()
    warm, cold = node("warm", slots=1, busy=1), node("cold", loaded=False, size=GB)
    assert p.select([warm, cold], req(1), 0.0)[0] is warm  # alone in line: wait ~2 s
    p.attach_queue(lambda model: 10)  # nine more behind this one
    chosen, reason = p.select([warm, cold], req(1), 0.0)
    assert chosen is cold and "load 3.0s" in reason


def test_a_stale_engine_queue_drains_as_our_requests_there_finish() -> None:
    p = CorralPolicy()
    read = EngineSignals(running=8, waiting=4, at=10.0)
    queued = node("queued", kind="openai", slots=32, busy=12, signals=read)
    other = node("other", kind="openai", slots=32, busy=10, signals=EngineSignals(at=10.0))
    assert p.select([queued, other], req(prompt_tokens=500), 10.0)[0] is other
    # Until the next reading: four of ours there finished, so its queue is gone.
    queued.in_flight = queued.in_flight_by_model[M] = 8
    chosen, reason = p.select([queued, other], req(prompt_tokens=500), 11.0)
    assert chosen is queued and "0 waiting" in reason


def test_a_backends_own_loaded_model_limit_foresees_the_eviction() -> None:
    from corral.core.loadcost import LoadCost
    from corral.core.policy_base import RouteStats

    b = BackendState("a", "u", healthy=True, max_loaded_models=1)
    b.models = frozenset({"x:latest", "y:latest"})
    b.loaded = {"x:latest": 1e9}
    costs = LoadCost(
        RouteStats(),
        load_base_s=1.0,
        load_bytes_per_s=5e8,
        default_model_bytes=4e9,
        max_loaded_models=3,
        evict_weight=0.5,
        recent_s=120.0,
        default_service_s=4.0,
        memory_factor=1.4,
    )
    assert costs.victims(b, "y:latest", 0.0) == ["x:latest"]
    b.max_loaded_models = None  # the policy's default (3): room for both
    assert costs.victims(b, "y:latest", 0.0) == []
