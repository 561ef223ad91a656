"""The limits' arithmetic with time passed in: buckets refill, places free, budgets reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.core.errors import BadRequest
from corral.core.limits import Admission, Limits, LocalCounters, Refusal, period_bounds

T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_requests_per_minute_refuse_the_next_and_refill_steadily() -> None:
    counters = LocalCounters()
    limits = Limits("ab12cd34", "alice", rpm=3)
    for _ in range(3):
        assert isinstance(counters.admit_now(limits, 0, at(0)), Admission)
    refused = counters.admit_now(limits, 0, at(0))
    assert isinstance(refused, Refusal) and refused.status == 429 and refused.limit == "rpm"
    assert refused.retry_after == pytest.approx(20.0)  # one request refills in 60/3 s
    assert refused.message == (
        "requests per minute limit of 3 for key ab12cd34 reached; resets in 20 s"
    )
    assert isinstance(counters.admit_now(limits, 0, at(19.9)), Refusal)
    assert isinstance(counters.admit_now(limits, 0, at(20)), Admission)


def test_tokens_per_minute_take_the_estimate_and_settle_the_real_count() -> None:
    counters = LocalCounters()
    limits = Limits("k", "alice", tpm=1000)
    first = counters.admit_now(limits, 100, at(0))
    assert isinstance(first, Admission)
    counters.finish(first, 1500, at(0))  # ran long: the bucket goes below zero
    refused = counters.admit_now(limits, 100, at(0))
    assert isinstance(refused, Refusal) and refused.limit == "tpm"
    assert refused.retry_after == pytest.approx(36.0)  # from -500 to 100 at 1000/min
    assert "tokens per minute limit of 1,000 for key k" in refused.message
    assert isinstance(counters.admit_now(limits, 100, at(36)), Admission)


def test_an_estimate_above_the_limit_waits_for_a_full_bucket_only() -> None:
    counters = LocalCounters()
    limits = Limits("k", "alice", tpm=100)
    assert isinstance(counters.admit_now(limits, 5000, at(0)), Admission)
    assert isinstance(counters.admit_now(limits, 5000, at(1)), Refusal)


def test_a_refused_request_takes_nothing_from_the_other_limits() -> None:
    counters = LocalCounters()
    limits = Limits("k", "alice", rpm=10, tpm=50)
    assert isinstance(counters.admit_now(limits, 50, at(0)), Admission)
    refused = counters.admit_now(limits, 50, at(0))
    assert isinstance(refused, Refusal) and refused.limit == "tpm"
    assert counters.in_flight("alice") == 1
    rpm_only = Limits("k", "alice", rpm=10)
    for _ in range(9):  # the refused request took no request from the rpm bucket
        assert isinstance(counters.admit_now(rpm_only, 0, at(0)), Admission)


def test_concurrency_is_per_user_and_freed_on_finish() -> None:
    counters = LocalCounters()
    one, two = Limits("k1", "bob", max_concurrent=2), Limits("k2", "bob", max_concurrent=2)
    a = counters.admit_now(one, 0, at(0))
    b = counters.admit_now(two, 0, at(0))
    assert isinstance(a, Admission) and isinstance(b, Admission)
    refused = counters.admit_now(one, 0, at(0))
    assert isinstance(refused, Refusal) and refused.limit == "concurrent"
    assert "concurrent requests limit of 2 for user bob" in refused.message
    assert isinstance(
        counters.admit_now(Limits("k3", "carol", max_concurrent=2), 0, at(0)), Admission
    )
    counters.finish(a, 0, at(1))
    assert isinstance(counters.admit_now(one, 0, at(1)), Admission)


def test_a_budget_lets_the_last_request_overrun_and_refuses_the_next_until_the_period_ends() -> (
    None
):
    counters = LocalCounters()
    limits = Limits("k", "dave", budget=1_000_000, period="month")
    start, end = period_bounds("month", T0)
    counters.set_spent("dave", start, 999_000)
    admitted = counters.admit_now(limits, 10, at(0))
    assert isinstance(admitted, Admission) and admitted.period_start == start
    counters.finish(admitted, 5_000, at(1))  # allowed to finish past the budget
    assert counters.spent("dave", start) == 1_004_000
    refused = counters.admit_now(limits, 10, at(2))
    assert isinstance(refused, Refusal) and refused.status == 403 and refused.limit == "budget"
    assert refused.message == (
        "token budget of 1,000,000 for May 2026 exhausted; resets 2026-06-01T00:00Z"
    )
    assert refused.retry_after == pytest.approx((end - at(2)).total_seconds())
    assert isinstance(counters.admit_now(limits, 10, end), Admission)  # a new month


def test_a_stream_charged_as_it_goes_counts_against_the_budget_before_it_ends() -> None:
    counters = LocalCounters()
    limits = Limits("k", "alice", budget=100)
    first = counters.admit_now(limits, 10, at(0))
    second = counters.admit_now(limits, 10, at(0))
    assert isinstance(first, Admission) and isinstance(second, Admission)
    start = first.period_start
    assert start is not None
    for _ in range(4):  # two streams, 16 tokens a batch each
        counters.charge(first, 16)
        counters.charge(second, 16)
    assert counters.spent("alice", start) == 128 and first.charged == 64
    # Both still run, yet the budget is spent: the next request is refused now.
    refused = counters.admit_now(limits, 10, at(1))
    assert isinstance(refused, Refusal) and refused.status == 403
    # The end settles with the backend's counts: only what was not charged yet.
    counters.finish(first, 70, at(2))  # 64 charged on the way, 70 in all
    counters.finish(second, 60, at(2))  # counted more than reported: not refunded
    assert counters.spent("alice", start) == 64 + 6 + 64
    assert counters.in_flight("alice") == 0


def test_stream_charges_take_from_the_tokens_per_minute_bucket_and_settle_once() -> None:
    counters = LocalCounters()
    limits = Limits("k", "alice", tpm=1000)
    running = counters.admit_now(limits, 100, at(0))
    assert isinstance(running, Admission)
    counters.charge(running, 800)  # the stream's output so far: 900 taken in all
    refused = counters.admit_now(limits, 200, at(0))
    assert isinstance(refused, Refusal) and refused.limit == "tpm"
    counters.charge(running, 0)  # nothing to charge is no charge
    assert running.charged == 800
    counters.finish(running, 850, at(0))  # 50 of prompt + 800 of output: 50 refunded
    assert isinstance(counters.admit_now(limits, 150, at(0)), Admission)
    assert isinstance(counters.admit_now(limits, 1, at(0)), Refusal)


def test_a_zero_limit_refuses_everything() -> None:
    counters = LocalCounters()
    refused = counters.admit_now(Limits("k", "e", rpm=0), 0, at(0))
    assert isinstance(refused, Refusal) and refused.retry_after == 60.0
    refused = counters.admit_now(Limits("k", "e", budget=0), 0, at(0))
    assert isinstance(refused, Refusal) and refused.status == 403


def test_period_bounds_are_utc_calendar_periods() -> None:
    assert period_bounds("day", T0) == (
        datetime(2026, 5, 20, tzinfo=UTC),
        datetime(2026, 5, 21, tzinfo=UTC),
    )
    assert period_bounds("week", T0)[0] == datetime(2026, 5, 18, tzinfo=UTC)  # a Monday
    assert period_bounds("month", datetime(2026, 12, 31, 23, tzinfo=UTC))[1] == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    with pytest.raises(BadRequest):
        period_bounds("year", T0)


async def test_the_counters_interface_admits_as_one_call() -> None:
    counters = LocalCounters()
    got = await counters.admit(Limits("k", "f", rpm=1), 0, at(0))
    assert isinstance(got, Admission)
    assert isinstance(await counters.admit(Limits("k", "f", rpm=1), 0, at(0)), Refusal)
