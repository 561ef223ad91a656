"""The node registry's rules: online, degraded, offline, removed (corral.core.nodes)."""

from __future__ import annotations

import pytest

from corral.core.errors import NoHealthyBackend
from corral.core.nodes import NodeTimeouts, node_status, should_remove, vram_from_gpus
from corral.core.policies import make_policy
from corral.core.scheduler import Scheduler
from corral.core.types import BackendState, RequestInfo

LIMITS = NodeTimeouts(offline_after_s=30, remove_after_s=600, degraded_after_failures=3)


def test_a_node_heard_recently_is_online() -> None:
    assert node_status(LIMITS, silent_s=5, failures=0, breaker_open=False) == "online"


def test_a_silent_node_is_offline_at_the_ttl_whatever_its_failures() -> None:
    assert node_status(LIMITS, silent_s=29.9, failures=0, breaker_open=False) == "online"
    assert node_status(LIMITS, silent_s=30, failures=0, breaker_open=False) == "offline"
    assert node_status(LIMITS, silent_s=31, failures=9, breaker_open=True) == "offline"


def test_repeated_failures_or_an_open_breaker_degrade_a_live_node() -> None:
    assert node_status(LIMITS, silent_s=1, failures=2, breaker_open=False) == "online"
    assert node_status(LIMITS, silent_s=1, failures=3, breaker_open=False) == "degraded"
    assert node_status(LIMITS, silent_s=1, failures=0, breaker_open=True) == "degraded"


def test_a_node_is_removed_only_after_the_longer_silence() -> None:
    assert not should_remove(LIMITS, 599)
    assert should_remove(LIMITS, 600)


def test_the_sweeper_looks_a_few_times_per_offline_period_within_bounds() -> None:
    assert LIMITS.sweep_every_s == 5.0
    assert NodeTimeouts(1, 3, 3).sweep_every_s == 0.25
    assert NodeTimeouts(0.01, 1, 3).sweep_every_s == 0.05


def test_inconsistent_timeouts_are_refused() -> None:
    with pytest.raises(ValueError):
        NodeTimeouts(offline_after_s=10, remove_after_s=5, degraded_after_failures=3)
    with pytest.raises(ValueError):
        NodeTimeouts(offline_after_s=10, remove_after_s=50, degraded_after_failures=0)


def test_vram_is_the_gpus_memory_summed_and_unknown_without_gpus() -> None:
    assert vram_from_gpus([24 * 1024**3, 24 * 1024**3]) == 48 * 1024**3
    assert vram_from_gpus([]) is None


# --- the scheduler's side: an offline node ---------------------------------------------


def _one_node() -> Scheduler:
    s = Scheduler(make_policy("least_conn"), max_waiting=3)
    s.add_backend(BackendState("n1", "http://n1:11434", healthy=True))
    s.set_models("n1", {"m:latest"})
    return s


def test_an_offline_node_takes_no_requests_and_says_why() -> None:
    s = _one_node()
    assert s.set_offline("n1", "node offline: its agent was silent 31s") is True
    assert not s.backends["n1"].routable
    with pytest.raises(NoHealthyBackend, match="1 offline"):
        s.submit(RequestInfo("m:latest", "/api/chat"), 0, 5)


def test_a_probe_does_not_bring_an_offline_node_back_but_its_agent_does() -> None:
    s = _one_node()
    s.set_offline("n1", "silent")
    assert s.probed("n1", 1.0) is False
    assert not s.backends["n1"].healthy
    s.set_online("n1")
    assert s.probed("n1", 2.0) is True
    assert s.backends["n1"].routable
    assert s.submit(RequestInfo("m:latest", "/api/chat"), 2.0, 5).decision is not None
