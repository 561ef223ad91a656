"""The pure vLLM engine model in virtual time: batching, KV blocks, prefix cache, preemption."""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace

import pytest

from corral.sim.model_types import Admission, Event, EventKind, Kind, Request, VllmConfig
from corral.sim.vllm_catalogue import served_spec
from corral.sim.vllm_kv import BlockPool
from corral.sim.vllm_model import VllmModel

SPEC = served_spec("Qwen/Qwen2.5-7B-Instruct")
EXACT = VllmConfig(jitter=0.0, token_chunk=0)


def engine(**kw: object) -> VllmModel:
    return VllmModel(SPEC, replace(EXACT, **kw))  # type: ignore[arg-type]


def run(m: VllmModel, until: float = math.inf) -> list[Event]:
    out: list[Event] = []
    while (t := m.next_event_time()) is not None and t <= until:
        out.extend(m.advance(t))
    if until < math.inf:
        out.extend(m.advance(until))
    return out


def req(req_id: int, prompt: int = 100, out: int = 50, **kw: object) -> Request:
    return Request(req_id, SPEC.name, Kind.CHAT, prompt_tokens=prompt, output_tokens=out, **kw)  # type: ignore[arg-type]


def ids(n: int, start: int = 0) -> tuple[int, ...]:
    return tuple(range(start, start + n))


def of(events: list[Event], kind: EventKind, req_id: int) -> Event:
    return next(e for e in events if e.kind is kind and e.req_id == req_id)


def test_a_lone_request_runs_prefill_then_one_token_per_step() -> None:
    m = engine()
    assert m.submit(req(1, prompt=1000, out=50), 0.0) is Admission.QUEUED
    events = run(m)
    first, done = of(events, EventKind.FIRST_TOKEN, 1), of(events, EventKind.DONE, 1)
    step = 1 / SPEC.gen_tps
    assert first.time == pytest.approx(step + 1000 / SPEC.prompt_tps)
    assert done.time - first.time == pytest.approx(49 * step)
    assert done.metrics is not None and done.metrics.eval_count == 50
    assert done.done_reason == "stop" and m.stats.prompt_tokens == 1000
    assert m.stats.generation_tokens == 50 and m.kv_cache_usage == 0.0


def test_running_batch_is_bounded_by_max_num_seqs_and_waiting_is_fifo() -> None:
    m = engine(max_num_seqs=2)
    for i in range(1, 6):
        m.submit(req(i, out=20 + i), 0.0)
    m.advance(0.0)  # the engine's next step takes what fits
    assert (m.num_running, m.num_waiting) == (2, 3)
    events = run(m)
    starts = [of(events, EventKind.FIRST_TOKEN, i).time for i in range(1, 6)]
    assert starts == sorted(starts)
    # Request 3 starts only when request 1 (the shorter) leaves the batch.
    assert starts[2] >= of(events, EventKind.DONE, 1).time
    assert m.stats.completed == 5 and (m.num_running, m.num_waiting) == (0, 0)


def test_kv_usage_grows_with_context_and_frees_on_finish_and_cancel() -> None:
    m = engine(kv_cache_tokens=16 * 100, max_model_len=1024, token_chunk=1)
    m.submit(req(1, prompt=160, out=400), 0.0)
    run(m, until=0.05)
    early = m.kv_cache_usage
    assert early >= 11 / 100  # 160 prompt tokens + the first generated ones
    run(m, until=2.0)
    assert m.kv_cache_usage > early
    m.submit(req(2, prompt=320, out=400), 2.0)
    run(m, until=2.5)
    both = m.kv_cache_usage
    assert m.cancel(2, 2.5) and m.stats.cancelled == 1
    assert m.kv_cache_usage < both
    assert not m.cancel(2, 2.6)
    events = run(m)
    assert not any(e.req_id == 2 and e.kind is EventKind.DONE for e in events)
    assert m.kv_cache_usage == 0.0 and m.in_flight == 0


def test_youngest_running_sequence_is_preempted_when_blocks_run_out() -> None:
    # 16 blocks; each request grows to 64 + 150 tokens = 14 blocks.
    m = engine(kv_cache_tokens=256, max_model_len=256)
    m.submit(req(1, prompt=64, out=150, prompt_ids=ids(64)), 0.0)
    m.submit(req(2, prompt=64, out=150, prompt_ids=ids(64, 1000)), 0.0)
    events = run(m)
    preempted = [e.req_id for e in events if e.kind is EventKind.PREEMPTED]
    assert preempted and set(preempted) == {2}
    assert m.stats.preemptions == len(preempted)
    assert {e.req_id for e in events if e.kind is EventKind.DONE} == {1, 2}
    # The victim's re-lookup is counted apart from first-time queries.
    assert m.stats.prefix_queries == 128 and m.stats.preempted_queries > 0
    assert of(events, EventKind.DONE, 2).time > of(events, EventKind.DONE, 1).time


def test_shared_prefix_hits_the_cache_and_gets_a_faster_first_token() -> None:
    m = engine()
    system = ids(1024)
    m.submit(req(1, prompt=1056, out=10, prompt_ids=system + ids(32, 5000)), 0.0)
    first = run(m)
    m.submit(req(2, prompt=1056, out=10, prompt_ids=system + ids(32, 9000)), 10.0)
    second = run(m)
    ttft1 = of(first, EventKind.FIRST_TOKEN, 1).time
    ttft2 = of(second, EventKind.FIRST_TOKEN, 2).time - 10.0
    assert ttft2 < ttft1 / 3
    assert m.stats.prefix_queries == 2 * 1056 and m.stats.prefix_hits == 1024
    done = of(second, EventKind.DONE, 2)
    assert done.metrics is not None and done.metrics.cached_tokens == 1024


def test_a_hit_never_covers_the_last_prompt_token() -> None:
    m = engine()
    for i, at in ((1, 0.0), (2, 10.0)):
        m.submit(req(i, prompt=64, out=5, prompt_ids=ids(64)), at)
        run(m)
    assert m.stats.prefix_hits == 48  # three of four blocks; the last is recomputed


def test_given_prefix_hashes_are_used_instead_of_token_ids() -> None:
    m = engine()
    m.submit(req(1, prompt=100, out=5, prefix_hashes=(11, 22, 33, 44, 55, 66)), 0.0)
    run(m)
    m.submit(req(2, prompt=100, out=5, prefix_hashes=(11, 22, 99)), 10.0)
    run(m)
    assert m.stats.prefix_hits == 32  # the chain breaks at the third block


def test_idle_cached_blocks_are_evicted_least_recently_used_first() -> None:
    m = engine(kv_cache_tokens=16 * 12, max_model_len=192)
    a, b, c = ids(64), ids(64, 1000), ids(128, 2000)
    for i, prompt in enumerate((a, b, c), start=1):
        m.submit(req(i, prompt=len(prompt), out=1, prompt_ids=prompt), 10.0 * i)
        run(m)
    assert m.stats.prefix_hits == 0 and m.stats.evicted_blocks == 4  # all of a's blocks
    m.submit(req(4, prompt=64, out=1, prompt_ids=b), 50.0)
    run(m)
    assert m.stats.prefix_hits == 48  # b, freed after a, survived
    m.submit(req(5, prompt=64, out=1, prompt_ids=a), 60.0)
    run(m)
    assert m.stats.prefix_hits == 48  # a was evicted


def test_a_long_prompt_is_prefilled_in_chunks_of_the_token_budget() -> None:
    m = engine(max_num_batched_tokens=512)
    m.submit(req(1, prompt=2048, out=3), 0.0)
    events = run(m)
    step = 1 / SPEC.gen_tps
    assert of(events, EventKind.FIRST_TOKEN, 1).time == pytest.approx(
        4 * step + 2048 / SPEC.prompt_tps
    )
    assert m.stats.steps == 4 + 2


def test_decode_steps_slow_mildly_as_the_batch_grows() -> None:
    def per_token(n: int) -> float:
        m = engine()
        for i in range(n):
            m.submit(req(i, prompt=16, out=200), 0.0)
        done = of(run(m), EventKind.DONE, 0)
        assert done.metrics is not None
        return done.metrics.eval_duration / 199

    alone, eight = per_token(1), per_token(8)
    assert alone == pytest.approx(1 / SPEC.gen_tps)
    assert eight == pytest.approx(alone * (1 + 7 * EXACT.batch_slowdown))


def test_embeddings_finish_after_prefill_and_skip_the_prefix_cache() -> None:
    m = engine()
    embed = Request(1, SPEC.name, Kind.EMBED, prompt_tokens=300, prompt_ids=ids(300))
    m.submit(embed, 0.0)
    events = run(m)
    assert [e.kind for e in events] == [EventKind.DONE]
    assert m.stats.prefix_queries == 0 and m.stats.prompt_tokens == 300


def test_requests_beyond_max_model_len_are_rejected() -> None:
    m = engine(max_model_len=1000)
    assert m.submit(req(1, prompt=1000, out=1), 0.0) is Admission.REJECTED
    assert m.submit(req(2, prompt=900, out=101), 0.0) is Admission.REJECTED
    assert m.submit(req(3, prompt=900, out=100), 0.0) is Admission.QUEUED
    assert m.stats.rejected == 2


def test_kv_cache_smaller_than_max_model_len_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="KV cache"):
        engine(kv_cache_tokens=4096, max_model_len=8192)


def _workload(seed: int, n: int) -> list[tuple[float, Request]]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(40.0)
        shared = ids(512, rng.randrange(8) * 10_000)
        prompt = shared + ids(rng.randint(16, 400), 1_000_000 + i * 1000)
        out.append((t, req(i, prompt=len(prompt), out=rng.randint(10, 300), prompt_ids=prompt)))
    return out


def _drive(m: VllmModel, work: list[tuple[float, Request]]) -> list[Event]:
    events: list[Event] = []
    for at, r in work:
        while (t := m.next_event_time()) is not None and t <= at:
            events.extend(m.advance(t))
        m.submit(r, at)
    events.extend(run(m))
    return events


def test_same_seed_and_calls_give_the_same_events() -> None:
    work = _workload(7, 300)
    config = replace(EXACT, jitter=0.05, seed=3, kv_cache_tokens=40_000)
    first = _drive(VllmModel(SPEC, config), work)
    assert first == _drive(VllmModel(SPEC, config), work)
    other = _drive(VllmModel(SPEC, replace(config, seed=4)), work)
    assert [e.time for e in other] != [e.time for e in first]


def test_thousands_of_requests_run_in_virtual_time_in_well_under_seconds() -> None:
    m = engine(kv_cache_tokens=60_000)
    work = _workload(1, 3000)
    started = time.process_time()  # CPU time: other processes on the machine do not count
    events = _drive(m, work)
    elapsed = time.process_time() - started
    assert sum(e.kind is EventKind.DONE for e in events) == 3000
    assert m.stats.prefix_hits > m.stats.prefix_queries / 3  # the shared heads hit
    assert elapsed < 5.0


def test_block_pool_frees_tail_first_and_keeps_hashes_until_reused() -> None:
    pool = BlockPool(4, block_size=16)
    blocks = pool.allocate(2)
    pool.cache(blocks[0], 111)
    pool.free(blocks)
    assert pool.usage == 0.0 and pool.longest_hit([111], 1) == [blocks[0]]
    pool.allocate(3)  # two untouched blocks, then the freed tail (unhashed)
    assert pool.longest_hit([111], 1) == [blocks[0]] and pool.evictions == 0
    pool.allocate(1)
    assert pool.longest_hit([111], 1) == [] and pool.evictions == 1
