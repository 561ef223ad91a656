"""Failure classification, model-missing detection, backoff, the retry budget, TTFT."""

from __future__ import annotations

import random

import pytest

from corral.core.retry import (
    Backoff,
    RetryBudget,
    RetryPolicy,
    SlidingCounts,
    TtftDeadline,
    Verdict,
    classify,
    is_model_missing,
    retry_after_s,
)


@pytest.mark.parametrize(
    ("status", "kind", "transient"),
    [
        (None, "connect", True),
        (None, "timeout", True),
        (None, "ttft_timeout", True),
        (None, "reset", True),
        (None, "http", True),
        (408, "http", True),
        (425, "http", True),
        (429, "http", True),
        (500, "http", True),
        (502, "http", True),
        (503, "http", True),
        (504, "http", True),
        (507, "http", True),
        (400, "http", False),
        (401, "http", False),
        (403, "http", False),
        (404, "http", False),
        (413, "http", False),
        (422, "http", False),
        (499, "http", False),
        (501, "http", False),
        (418, "http", False),
        (302, "http", False),
    ],
)
def test_classification_table(status: int | None, kind: str, transient: bool) -> None:
    verdict = classify(status, kind)
    assert verdict.transient is transient
    assert verdict.reason
    if status is not None and kind == "http":
        assert str(status) in verdict.reason


def test_classify_unpacks_to_transient_and_reason() -> None:
    transient, reason = classify(503)
    assert transient and reason == "HTTP 503: busy or unavailable"
    assert classify(None, "ttft_timeout").reason.startswith("no first token")


def test_unknown_failure_kind_is_transient_not_blamed_on_the_client() -> None:
    verdict = classify(None, "tls")
    assert verdict.transient and "tls" in verdict.reason


@pytest.mark.parametrize(
    "body",
    [
        '{"error":"model \\"llama3:8b\\" not found, try pulling it first"}',
        '{"error":"model \'llama2\' not found, try pulling it first"}',
        '{"object":"error","message":"The model `qwen` does not exist.","code":404}',
        '{"error":{"message":"The model `qwen2.5:7b` does not exist.","type":"NotFoundError"}}',
        b'{"error":"model \\"x\\" not found, try pulling it first"}',
    ],
)
def test_model_missing_is_recognised_in_ollama_and_vllm_shapes(body: str | bytes) -> None:
    assert is_model_missing(404, body)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, "404 page not found"),
        (404, '{"error":"not found"}'),
        (400, '{"error":"model \\"x\\" not found, try pulling it first"}'),
        (None, "The model `x` does not exist."),
    ],
)
def test_other_not_founds_are_not_model_missing(status: int | None, body: str) -> None:
    assert not is_model_missing(status, body)


def test_retry_after_reads_seconds_caps_them_and_ignores_dates() -> None:
    assert retry_after_s("5") == 5.0
    assert retry_after_s(" 1.5 ") == 1.5
    assert retry_after_s("9999") == 300.0
    assert retry_after_s("9999", cap=30) == 30.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after_s("-1") is None
    assert retry_after_s("nan") is None
    assert retry_after_s(None) is None


def test_backoff_stays_within_its_growing_ceiling() -> None:
    backoff = Backoff(base=0.1, cap=1.0, seed=7)
    assert [backoff.ceiling(k) for k in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.ceiling(10_000) == 1.0
    for attempt in range(1, 8):
        for _ in range(200):
            assert 0.0 <= backoff.delay(attempt) <= backoff.ceiling(attempt)


def test_backoff_is_deterministic_under_a_seed_and_jittered() -> None:
    assert Backoff(seed=3).delay(4) == Backoff(seed=3).delay(4)
    first = Backoff(rng=random.Random(3))
    delays = [first.delay(4) for _ in range(50)]
    again = Backoff(rng=random.Random(3))
    assert delays == [again.delay(4) for _ in range(50)]
    assert len(set(delays)) > 40  # full jitter: the retries of a burst spread out


def test_budget_floor_allows_a_few_retries_on_a_quiet_gateway() -> None:
    budget = RetryBudget(ratio=0.2, window_s=10, min_retries=3)
    assert [budget.try_spend(0.0) for _ in range(5)] == [True, True, True, False, False]


def test_budget_caps_retries_at_the_ratio_under_a_storm() -> None:
    budget = RetryBudget(ratio=0.2, window_s=10, min_retries=3)
    requests = retries = 0
    # 100 requests a second for 30 s, every one failing and wanting a retry.
    for step in range(3000):
        now = step * 0.01
        budget.on_request(now)
        requests += 1
        if budget.try_spend(now):
            retries += 1
    assert retries <= 0.2 * requests + 3 * 4  # one floor per window, at most
    assert retries >= 0.19 * requests  # and the ratio is actually used
    reqs, spent = budget.usage(29.99)
    assert spent <= 3 + 0.2 * reqs


def test_budget_recovers_after_the_window() -> None:
    budget = RetryBudget(ratio=0.2, window_s=10, min_retries=3)
    for _ in range(3):
        assert budget.try_spend(0.0)
    assert not budget.try_spend(5.0)
    assert budget.try_spend(10.5)  # the old retries slid out of the window
    assert budget.allowance(10.5) == 3


def test_sliding_counts_forget_old_buckets() -> None:
    counts = SlidingCounts(10.0)
    counts.add(0.0, 1, 1)
    counts.add(5.0, 2, 0)
    assert counts.totals(9.9) == (3, 1)
    assert counts.totals(10.5) == (2, 0)
    assert counts.totals(30.0) == (0, 0)


def test_policy_says_why_it_does_not_retry() -> None:
    policy = RetryPolicy(max_attempts=3, budget=RetryBudget(min_retries=1), backoff=Backoff(seed=1))
    busy = classify(503)
    first = policy.decide(busy, 1, 0.0)
    assert first.retry and 0 <= first.delay_s <= 0.1
    assert first.reason.startswith("retry 2/3 in ") and "503" in first.reason
    assert "budget" in policy.decide(busy, 1, 0.0).reason  # floor of 1 spent
    assert "permanent" in policy.decide(classify(400), 1, 0.0).reason
    assert "3/3 attempts" in policy.decide(busy, 3, 0.0).reason
    streamed = policy.decide(Verdict(True, "reset"), 1, 0.0, streamed=True)
    assert not streamed.retry and "streaming" in streamed.reason


def test_ttft_deadline_gives_cold_models_time_to_load() -> None:
    ttft = TtftDeadline(first_token_s=30, load_s=120)
    assert ttft.at(100.0) == 130.0
    assert ttft.at(100.0, loaded=False) == 250.0
    assert not ttft.expired(100.0, 129.9)
    assert ttft.expired(100.0, 130.0)
    assert not ttft.expired(100.0, 200.0, loaded=False)
