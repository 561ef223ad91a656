"""Prefix and session affinity, bounded so that no backend is piled on."""

from __future__ import annotations

from collections import Counter

from corral.core.affinity import Affinity, PrefixMemory
from corral.core.costmodel import CorralPolicy
from corral.core.policies import RoundRobin, make_policy
from corral.core.policy_base import Policy
from corral.core.types import BackendState, RequestInfo

M = "m:latest"
SYSTEM = tuple(range(100, 110))  # a 10-block shared opening


def vllm(name: str, *, cache: bool = True, slots: int = 16) -> BackendState:
    b = BackendState(
        name,
        f"http://{name}",
        kind="openai",
        max_concurrency=slots,
        healthy=True,
        prefix_cache=cache,
    )
    b.models = frozenset({M})
    return b


def ollama(name: str) -> BackendState:
    b = BackendState(name, f"http://{name}", max_concurrency=4, healthy=True)
    b.models = frozenset({M})
    b.loaded[M] = float("inf")
    return b


def req(i: int, prefix: tuple[int, ...] = (), session: str | None = None) -> RequestInfo:
    return RequestInfo(
        M, "/v1/chat/completions", request_id=f"r{i}", prefix=prefix, session=session
    )


def dispatch(p: Policy, fleet: list[BackendState], info: RequestInfo) -> tuple[BackendState, str]:
    choice = p.select(fleet, info, 0.0)
    assert choice is not None
    b, reason = choice
    b.in_flight += 1
    b.in_flight_by_model[M] = b.in_flight_by_model.get(M, 0) + 1
    p.on_dispatch(b, info, 0.0)
    return b, reason


def test_prefix_memory_finds_the_longest_leading_match() -> None:
    mem = PrefixMemory()
    a, b = vllm("a"), vllm("b")
    mem.record("a", M, (1, 2, 3, 4, 5))
    mem.record("b", M, (1, 2, 9))
    eligible = {"a": a, "b": b}
    assert mem.match(M, (1, 2, 3, 4, 7, 8), eligible) == (4, [a])
    depth, holders = mem.match(M, (1, 2, 6), eligible)
    assert depth == 2 and set(holders) == {a, b}
    assert mem.match(M, (1, 2, 3), {"b": b}) == (2, [b])  # only eligible ones count
    assert mem.match("other:latest", (1, 2, 3), eligible) == (0, [])


def test_prefix_memory_is_bounded_and_keeps_leading_blocks_longest() -> None:
    mem = PrefixMemory(capacity=8)
    a = vllm("a")
    mem.record("a", M, tuple(range(6)))
    mem.record("a", M, (0, 1, 20, 21, 22, 23))
    assert len(mem) == 8
    # The deepest blocks of the older prompt went first; its opening survives.
    assert mem.match(M, tuple(range(6)), {"a": a})[0] == 4
    assert mem.match(M, (0, 1, 20, 21, 22, 23), {"a": a})[0] == 6
    mem.forget("a")
    assert len(mem) == 0 and mem.match(M, (0, 1), {"a": a}) == (0, [])


def test_corral_follows_a_shallow_prefix_hit_only_a_little_beyond_the_bound() -> None:
    p = CorralPolicy()
    fleet = [vllm("a"), vllm("b"), vllm("c")]
    first, _ = dispatch(p, fleet, req(0, (1, 2, *range(100, 118))))
    picks = [
        dispatch(p, fleet, req(i, (1, 2, *range(200 * i, 200 * i + 18))))[0] for i in range(1, 5)
    ]
    # 2 of 20 blocks cached: worth 0.5 x 2/20 x 16 slots = 0.8 requests beyond
    # affinity_abs=2, so the holder takes up to 3 more than the least-loaded.
    assert picks[:2] == [first, first]
    assert picks[2] is not first
    assert max(b.in_flight for b in fleet) - min(b.in_flight for b in fleet) <= 3


def test_corral_follows_a_deep_prefix_hit_while_the_saved_prefill_pays_for_the_load() -> None:
    p = CorralPolicy()
    fleet = [vllm("a"), vllm("b"), vllm("c")]
    first, _ = dispatch(p, fleet, req(0, (*SYSTEM, 1, 2, 3, 4)))
    reasons = []
    picks = []
    for i in range(1, 13):
        b, reason = dispatch(p, fleet, req(i, (*SYSTEM, 1, 2, 3, 4, 50 + i)))
        picks.append(b.name)
        reasons.append(reason)
    # 14 of 15 blocks cached on 16 slots: worth 0.5 x 14/15 x 16 = 7.5 requests
    # beyond affinity_abs=2, so the holder takes up to 9 more than the others.
    assert picks[:9] == [first.name] * 9
    assert "prefix 14/15 blocks on " + first.name in reasons[0]
    assert picks[9] != first.name
    # The backend that got the overflow learned the prefix as well.
    assert "prefix 14/15 blocks on " + picks[9] in reasons[10]


def test_prefix_affinity_is_for_engines_with_a_prefix_cache_only() -> None:
    p = CorralPolicy(session_affinity=False)
    fleet = [vllm("a", cache=False), vllm("b", cache=False)]
    dispatch(p, fleet, req(0, SYSTEM))
    _, reason = dispatch(p, fleet, req(1, (*SYSTEM, 7)))
    assert "prefix" not in reason


def test_session_header_sticks_to_its_backend_within_bounds() -> None:
    p = CorralPolicy()
    fleet = [ollama("a"), ollama("b")]
    home, _ = dispatch(p, fleet, req(0, session="alice"))
    b, reason = dispatch(p, fleet, req(1, session="alice"))  # home is now the busier one
    assert b is home and f"session on {home.name}" in reason
    home.in_flight += 2  # three ahead of the other: too far, go by load
    moved, _ = dispatch(p, fleet, req(2, session="alice"))
    assert moved is not home
    again, _ = dispatch(p, fleet, req(3, session="alice"))
    assert again is moved  # the conversation lives there now


def test_a_session_without_a_header_is_keyed_by_its_opening_blocks() -> None:
    p = CorralPolicy()
    fleet = [ollama("a"), ollama("b")]
    home, _ = dispatch(p, fleet, req(0, prefix=(*SYSTEM[:4], 1)))
    b, reason = dispatch(p, fleet, req(1, prefix=(*SYSTEM[:4], 1, 2, 3)))
    assert b is home and "conversation" in reason


def test_sticky_wraps_any_policy() -> None:
    p = make_policy("round_robin", {"session_affinity": True})
    fleet = [ollama("a"), ollama("b"), ollama("c")]
    names: Counter[str] = Counter()
    for i in range(6):
        b, _ = dispatch(p, fleet, req(i, session="s"))
        names[b.name] += 1
        b.in_flight -= 1
    assert len(names) == 1
    plain = RoundRobin()
    assert len({dispatch(plain, fleet, req(i, session="s"))[0].name for i in range(3)}) == 3


def test_forgetting_a_backend_drops_its_sessions_and_prefixes() -> None:
    aff = Affinity()
    a, b = vllm("a"), vllm("b")
    aff.record(a, req(0, SYSTEM, session="s"))
    assert aff.prefer([a, b], req(1, SYSTEM, session="s")) == (a, "session")
    aff.forget("a")
    assert aff.prefer([a, b], req(1, SYSTEM, session="s")) is None


def test_a_prefix_every_candidate_holds_is_no_reason_to_prefer_one() -> None:
    aff = Affinity(session_affinity=False)
    a, b = vllm("a"), vllm("b")
    aff.record(a, req(0, SYSTEM))
    aff.record(b, req(1, SYSTEM))
    assert aff.prefer([a, b], req(2, (*SYSTEM, 5))) is None
    aff.record(a, req(3, (*SYSTEM, 5)))
    assert aff.prefer([a, b], req(4, (*SYSTEM, 5, 6))) == (a, "prefix 11/12 blocks")


def test_corral_prices_the_prefill_a_prefix_hit_saves() -> None:
    p = CorralPolicy(session_affinity=False)
    a, b = vllm("a"), vllm("b")
    long_prompt = (*SYSTEM, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    p.on_dispatch(a, req(0, long_prompt), 0.0)
    a.in_flight = 2  # busier, but holds 19 of the 20 blocks of an 8k-token prompt
    info = RequestInfo(
        M, "/v1/chat/completions", request_id="r1", prompt_tokens=8000, prefix=(*long_prompt, 10)
    )
    chosen, reason = p.select([a, b], info, 1.0)
    assert chosen is a
    assert reason.startswith("corral: prefix 19/20 blocks on a")
