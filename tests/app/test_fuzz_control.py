"""Every operation of the live OpenAPI spec, driven by schemathesis with generated input.

A real gateway (auth on, CORRAL_ADMIN_KEY, a fleet token, workers configured) in
front of a simulated Ollama node and a simulated vLLM server runs in a thread of its
own; schemathesis reads its /openapi.json and calls each operation with generated
path parameters, queries and bodies, valid and invalid, over real sockets. Each
answer must: not be a 5xx, carry a status the spec documents for that operation,
match the documented schema for that status and content type, and, when it is a
4xx, be the control plane's error object ``{"error": {"message", "type", "param",
"code"}}``.

Admin routes are called with an admin key, the self-service routes with a user's
key and the heartbeats with the fleet token, so the calls get past authentication
(who may call what is tests/app/test_admin_matrix.py's subject). The operations run
in the spec's order against one gateway, destructive ones included (a generated
``PUT /admin/config/backends`` may empty the fleet): whatever an earlier call left,
a later one must still answer within its contract.

Bounded for CI: derandomized hypothesis, a few examples an operation
(``CORRAL_FUZZ_EXAMPLES`` for a deeper run, e.g. 200 with ``--timeout 0``).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from corral.adapters.store.keys import ADMIN_KEY_ENV
from corral.app.gateway import Gateway
from corral.sim.launch import NodeSpec, start_nodes, stop_nodes
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_launch import VllmSpec
from tests.app.fuzz_support import in_thread
from tests.app.workers_support import SIM
from tests.helpers import FAST_SIM, SIM_MODELS, run_gateway, until

ADMIN_KEY = "crl_" + "f" * 44
FLEET_TOKEN = "fuzz-fleet-token-0123456789"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "5"))  # per operation

# Generated calls to these would do slow real work, so they are not fuzzed; each is
# called with malformed input by hand (test_slow_operations_refuse_malformed_input).
SLOW = {
    # Starts engine processes and waits until each answers.
    ("POST", "/admin/workers/spawn"),
    ("POST", "/admin/instances/spawn"),
    # Downloads a model onto every Ollama backend, streaming progress as it goes.
    ("POST", "/admin/models/pull"),
}

CONFIG = schemathesis.Config.from_dict(
    {
        # The keys are ours to send (Live.headers_for): generated or dropped
        # Authorization headers would only meet the key check, which
        # tests/app/test_admin_matrix.py covers route by route.
        "generation": {"with-security-parameters": False},
    }
)


@dataclass
class Live:
    """The gateway under test (in a thread of its own: tests/app/fuzz_support.py)."""

    url: str
    gw: Gateway
    user_key: str = ""
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    def headers_for(self, path: str) -> dict[str, str]:
        if path in ("/agent/heartbeat", "/nodes/heartbeat"):
            return {"Authorization": f"Bearer {FLEET_TOKEN}"}
        if path.startswith("/v1/"):  # the self-service routes speak for a user
            return {"Authorization": f"Bearer {self.user_key}"}
        return {"Authorization": f"Bearer {ADMIN_KEY}"}


@asynccontextmanager
async def _gateway() -> AsyncIterator[Live]:
    nodes = await start_nodes(
        [
            NodeSpec(models=SIM_MODELS, config=FAST_SIM, name="sim0"),
            VllmSpec(model=QWEN, config=VllmConfig(speed=200, jitter=0), name="vllm0"),
        ]
    )
    backends = [
        {"name": "sim0", "url": nodes[0].url},
        {"name": "vllm0", "url": "openai+" + nodes[1].url},
    ]
    try:
        async with run_gateway(
            backends,
            auth={"mode": "on", "reload_s": 60},
            environ={ADMIN_KEY_ENV: ADMIN_KEY},
            fleet={"token": FLEET_TOKEN},
            # A node's engine URL (generated) is probed when it joins: keep that short.
            health={"timeout_s": 0.5},
            timeouts={"connect_s": 0.5},
            workers={"command": SIM, "max": 2, "autoscale": False},
        ) as running:
            yield Live(running.url, running.gw)
    finally:
        await stop_nodes(nodes)


async def _ready(live: Live) -> None:
    await until(lambda: all(b.healthy for b in live.gw.fleet.backends.values()))
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        made = await client.post(
            "/admin/users",
            json={"name": "fuzz-user", "key": {}},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
    assert made.status_code == 201, made.text
    live.user_key = made.json()["key"]["key"]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with in_thread(_gateway, _ready) as running:
        yield running


def error_object(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """A 4xx is the control plane's error object, with a message and a type."""
    if not 400 <= response.status_code < 500:
        return None
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == "invalid_request_error" or error["type"].endswith("_error"), error
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_object,
    negative_data_rejection,  # what the spec calls invalid is refused
]
# Heartbeats are read leniently on purpose (an agent of another version, a seed-003
# node sending "12.5" for a number): they may accept what the spec calls invalid.
LENIENT = {"/agent/heartbeat", "/nodes/heartbeat"}


def fuzz_operation(live: Live, op: Any, session: requests.Session) -> None:
    """Generated calls of one operation, valid and invalid, each answer checked."""
    strategy = op.as_strategy(GenerationMode.POSITIVE) | op.as_strategy(GenerationMode.NEGATIVE)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(
            base_url=live.url, session=session, headers=live.headers_for(op.path), timeout=30
        )
        live.statuses[op.label][response.status_code] += 1
        excluded = [negative_data_rejection] if op.path in LENIENT else []
        case.validate_response(response, checks=CHECKS, excluded_checks=excluded)

    run()


def test_every_operation_answers_generated_input_within_its_contract(live: Live) -> None:
    spec = schemathesis.openapi.from_url(live.url + "/openapi.json", config=CONFIG)
    operations = [result.ok() for result in spec.get_all_operations()]
    listed = {(op.method.upper(), op.path) for op in operations}
    assert listed >= SLOW, "an operation kept out of the fuzzing is gone from the spec"
    assert len(listed) > 60  # the whole control plane, not a part of it
    failures: dict[str, str] = {}
    with requests.Session() as session:
        for op in operations:
            if (op.method.upper(), op.path) in SLOW:
                continue
            try:
                fuzz_operation(live, op, session)
            except (Exception, BaseExceptionGroup) as exc:
                failures[op.label] = str(exc)
    if failures:
        pytest.fail("\n\n".join(f"{k}:\n{v}" for k, v in failures.items()), pytrace=False)
    called = {label for label, statuses in live.statuses.items() if statuses}
    assert called == {op.label for op in operations if (op.method.upper(), op.path) not in SLOW}


def _refused(resp: httpx.Response, param: str) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert param in error["message"], error


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/workers/spawn", {"count": 0}, "count"),
        ("/admin/workers/spawn", {"count": 1001}, "count"),
        ("/admin/workers/spawn", {"count": "many"}, "count"),
        ("/admin/workers/spawn", {"count": 1, "replicas": 2}, "replicas"),
        ("/admin/workers/spawn", {"wait": "later"}, "wait"),
        ("/admin/workers/spawn", [1], "body"),
        ("/admin/instances/spawn", {"count": -1}, "count"),
        ("/admin/instances/spawn", {"count": None}, "count"),
        ("/admin/models/pull", {}, "model"),
        ("/admin/models/pull", {"model": ""}, "model"),
        ("/admin/models/pull", {"model": 7}, "model"),
        ("/admin/models/pull", {"model": "m", "backends": "sim0"}, "backends"),
        ("/admin/models/pull", {"model": "m", "stream": "yes"}, "stream"),
        ("/admin/models/pull", {"model": "m", "everywhere": True}, "everywhere"),
    ],
)
def test_slow_operations_refuse_malformed_input(
    live: Live, path: str, body: Any, param: str
) -> None:
    assert live.gw.workers is not None
    before = set(live.gw.fleet.backends)
    with httpx.Client(base_url=live.url, timeout=30) as client:
        resp = client.post(path, json=body, headers=live.headers_for(path))
        _refused(resp, param)
        garbled = client.post(
            path,
            content=b'{"count": ',
            headers={**live.headers_for(path), "Content-Type": "application/json"},
        )
        _refused(garbled, "body")
    # Refused before any work: no worker started, no backend joined or left.
    assert not live.gw.workers.workers
    assert set(live.gw.fleet.backends) == before
