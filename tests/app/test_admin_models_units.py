"""The pieces of the model routes that need no fleet: the pull tally and the demand
listener."""

from __future__ import annotations

from typing import Any

from corral.app.admin.model_pull import PullTally
from corral.app.admin.model_views import demand_listener
from corral.core.demand import DemandCounter
from corral.core.types import BackendState
from corral.core.usage import UsageRecord

SIM0 = BackendState("sim0", "http://127.0.0.1:1")
SIM1 = BackendState("sim1", "http://127.0.0.1:2")
VLLM = BackendState("vllm0", "http://127.0.0.1:3", kind="openai")


def layer(digest: str, total: int, completed: int) -> dict[str, Any]:
    return {"status": f"pulling {digest}", "digest": digest, "total": total, "completed": completed}


def test_each_backends_bytes_are_summed_over_its_layers_and_overall() -> None:
    tally = PullTally("phi3:mini", [SIM0, SIM1], [(VLLM, "cannot pull")])
    assert tally.start() == [
        {"type": "start", "model": "phi3:mini", "backends": ["sim0", "sim1", "vllm0"]},
        {"type": "done", "backend": "vllm0", "result": "skipped", "reason": "cannot pull"},
    ]
    assert tally.line("sim0", {"status": "pulling manifest"}) == [
        {
            "type": "progress",
            "backend": "sim0",
            "status": "pulling manifest",
            "completed": 0,
            "total": 0,
        }
    ]
    tally.line("sim0", layer("a", 100, 50))
    lines = tally.line("sim0", layer("b", 10, 10))
    assert lines[0]["completed"] == 60 and lines[0]["total"] == 110 and lines[0]["digest"] == "b"
    assert lines[1] == {
        "type": "overall",
        "completed": 60,
        "total": 110,
        "finished": 0,
        "backends": 2,
    }
    # The same layer again with no movement: no overall line.
    assert len(tally.line("sim0", layer("b", 10, 10))) == 1
    tally.line("sim1", layer("a", 100, 100))
    assert tally.line("sim0", {"status": "success"}) == []
    done = tally.end("sim0", None)
    assert done[0] == {"type": "done", "backend": "sim0", "result": "ok"}
    assert done[1]["finished"] == 1 and done[1]["completed"] == 160
    assert not tally.finished
    tally.end("sim1", None)  # ended without saying success
    assert tally.finished
    summary = tally.summary()
    assert summary["status"] == "partial"
    assert summary["results"] == [
        {"backend": "sim0", "kind": "ollama", "status": "ok"},
        {"backend": "sim1", "kind": "ollama", "status": "error", "error": "ended without success"},
        {"backend": "vllm0", "kind": "openai", "status": "skipped", "reason": "cannot pull"},
    ]


def test_a_cancelled_pull_fails_the_backends_still_pulling() -> None:
    tally = PullTally("m", [SIM0, SIM1], [])
    tally.start()
    tally.line("sim0", {"status": "success"})
    tally.end("sim0", None)
    tally.cancelled()
    summary = tally.summary()
    assert summary["status"] == "partial"
    assert summary["results"][1] == {
        "backend": "sim1",
        "kind": "ollama",
        "status": "error",
        "error": "cancelled",
    }


def test_a_pull_with_nothing_to_pull_on_is_skipped() -> None:
    tally = PullTally("m", [], [(VLLM, "cannot pull")])
    tally.start()
    assert tally.finished
    assert tally.summary()["status"] == "skipped"


def record(**fields: Any) -> UsageRecord:
    base: dict[str, Any] = {
        "request_id": "r",
        "endpoint": "/api/chat",
        "dialect": "ollama",
        "model": "llama3.2:1b",
        "backend": "sim0",
        "status": 200,
        "started_at": 1000.0,
        "duration_s": 2.0,
    }
    return UsageRecord(**(base | fields))


def test_the_demand_listener_counts_inference_the_fleet_was_asked_for() -> None:
    counter = DemandCounter()
    observe = demand_listener(counter)
    observe(record(queued_s=0.5, load_duration_s=1.2))
    observe(record(endpoint="/v1/chat/completions", dialect="openai", status=503, backend=None))
    observe(record(model="phi3:mini", status=404, backend=None))
    observe(record(status=499))
    # Not demand: model management, refusals for the caller, and requests with no model.
    observe(record(endpoint="/api/pull"))
    observe(record(endpoint="/api/show"))
    observe(record(status=401, backend=None))
    observe(record(status=400, backend=None))
    observe(record(status=429, backend=None))
    observe(record(model=""))
    d = counter.demand("llama3.2:1b", 1010.0, 300)
    assert d.requests == 3
    assert d.busy_s == 1.5 + 2.0  # slot time: duration less queueing; none when not routed
    assert d.waited_s == 0.5 and d.cold == 1
    assert counter.demand("phi3:mini", 1010.0, 300).requests == 1
    assert counter.last_seen("llama3.2:1b", "sim0") == 1002.0
