"""Bad input to the control plane: bounded bodies, bad JSON said as such, JSON types kept,
and a spec that documents the errors the routes really answer.

The generated calls are in tests/app/test_fuzz_control.py; these pin down, one by one,
what it and the hand probes around it found.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from corral.adapters.store.keys import ADMIN_KEY_ENV
from corral.sim.launch import NodeSpec
from tests.helpers import RunningGateway, run_gateway, sim_fleet

ADMIN = "crl_" + "b" * 44
BEARER = {"Authorization": f"Bearer {ADMIN}"}
MIB = 1024 * 1024


@pytest.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    async with run_gateway(
        [], auth={"mode": "on", "reload_s": 60}, environ={ADMIN_KEY_ENV: ADMIN}
    ) as running:
        yield running


def refused(resp: httpx.Response, status: int, code: str, param: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["type"] == "invalid_request_error", error
    assert error["code"] == code and error["param"] == param, error
    return error


async def test_an_oversized_control_plane_body_is_refused_before_it_is_read(
    gateway: RunningGateway,
) -> None:
    # No key at all: the size is refused first, so nobody can make the gateway hold
    # a body of any size in memory on its way to a 401.
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        resp = await client.post("/admin/users", content=b"x" * (40 * MIB))
    error = refused(resp, 413, "PayloadTooLarge", None)
    assert f"of {40 * MIB} bytes exceeds {32 * MIB} bytes" in error["message"]


async def test_an_oversized_chunked_control_plane_body_is_a_413(gateway: RunningGateway) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * MIB

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        resp = await client.post("/admin/groups", content=chunks(), headers=BEARER)
    error = refused(resp, 413, "PayloadTooLarge", None)
    assert f"exceeds {32 * MIB} bytes" in error["message"]


async def test_a_tiny_body_limit_leaves_the_control_plane_a_mebibyte() -> None:
    async with (
        run_gateway([], limits={"max_body_bytes": 64}) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
    ):
        # The API that changes the limit still takes a body larger than the limit ...
        raised = await client.put("/admin/config/limits", json={"max_body_bytes": 4096})
        assert raised.status_code == 200, raised.text
        assert gw.gw.settings.limits.max_body_bytes == 4096
        # ... up to the floor of 1 MiB, whatever the setting.
        resp = await client.post("/admin/groups", content=b"x" * (MIB + 1))
    refused(resp, 413, "PayloadTooLarge", None)


async def test_model_blobs_are_not_bound_by_the_body_limit() -> None:
    blob = b"\x00gguf" * 1000  # larger than the limit below
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    async with (
        sim_fleet(NodeSpec(), limits={"max_body_bytes": 1024}) as fleet,
        httpx.AsyncClient(base_url=fleet.url, timeout=30) as client,
    ):
        resp = await client.post(f"/api/blobs/{digest}", content=blob)
        assert resp.status_code == 201, resp.text
        assert (await client.head(f"/api/blobs/{digest}")).status_code == 200


async def test_malformed_json_names_the_body_and_where_it_broke(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        resp = await client.put(
            "/admin/config/queue",
            content=b'{"timeout_s": ',
            headers={**BEARER, "Content-Type": "application/json"},
        )
    error = refused(resp, 400, "InvalidJSON", "body")
    assert error["message"].startswith("body: invalid JSON at character 14: Expecting value")


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain; charset=utf-8", ""],
)
async def test_a_json_body_sent_without_saying_so_is_read_as_json(
    gateway: RunningGateway, content_type: str | None
) -> None:
    # curl -d sends application/x-www-form-urlencoded; other tools text/plain or nothing.
    headers = dict(BEARER) if content_type is None else {**BEARER, "Content-Type": content_type}
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        request = client.build_request("POST", "/admin/groups", content=b'{"name": "ops"}')
        request.headers.pop("Content-Type", None)
        request.headers.update(headers)
        made = await client.send(request)
        bad = await client.post(
            "/admin/groups",
            content=b"name=ops",
            headers={**BEARER, "Content-Type": "application/x-www-form-urlencoded"},
        )
        typed = await client.post(
            "/admin/groups",
            content=b'{"name": "ops2"}',
            headers={**BEARER, "Content-Type": "application/xml"},
        )
    assert made.status_code == 201, made.text
    assert made.json()["name"] == "ops"
    # Not JSON after all: said so, naming the body, not "not a dictionary".
    error = refused(bad, 400, "InvalidJSON", "body")
    assert error["message"].startswith("body: invalid JSON")
    # A type the client did name is kept, and is not JSON.
    assert typed.status_code == 400, typed.text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"name": "\xff\xfe"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"name": "g", "weight": 1' + b"0" * 5000 + b"}", "a number with too many digits"),
    ],
    ids=["latin-1", "deep", "digits"],
)
async def test_a_body_that_cannot_be_decoded_is_bad_json_not_a_server_error(
    gateway: RunningGateway, body: bytes, reason: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        resp = await client.post(
            "/admin/groups", content=body, headers={**BEARER, "Content-Type": "application/json"}
        )
    error = refused(resp, 400, "InvalidJSON", "body")
    assert error["message"] == f"body: invalid JSON: {reason}"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/groups", {"name": "g", "weight": True}, "weight"),
        ("/admin/groups", {"name": "g", "token_budget": "1000"}, "token_budget"),
        ("/admin/users", {"name": "u", "max_concurrent": "3"}, "max_concurrent"),
        ("/admin/users", {"name": "u", "key": {"rpm_limit": 1.0}}, "key.rpm_limit"),
        ("/admin/workers/prune", {"count": True}, "count"),
        ("/admin/models/warm", {"model": "m", "copies": "2"}, "copies"),
        (
            "/admin/backends/register",
            {"url": "http://h:1", "max_concurrent": "4"},
            "max_concurrent",
        ),
    ],
)
async def test_a_value_of_another_json_type_is_refused_naming_the_field(
    gateway: RunningGateway, path: str, body: dict[str, Any], param: str
) -> None:
    # As the inference endpoints refuse {"stream": "yes"}: true is not 1, "3" is not 3.
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        resp = await client.post(path, json=body, headers=BEARER)
    error = refused(resp, 400, "InvalidField", param)
    assert error["message"].startswith(f"{param}: Input should be a valid")


async def test_an_expiry_still_comes_as_a_json_string(gateway: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        made = await client.post(
            "/admin/users",
            json={"name": "carol", "key": {"expires_at": "2099-01-01T00:00:00Z"}},
            headers=BEARER,
        )
    assert made.status_code == 201, made.text
    assert made.json()["key"]["expires_at"].startswith("2099-01-01T00:00:00")


async def test_the_spec_documents_the_errors_the_control_plane_answers(
    gateway: RunningGateway,
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKey"]["scheme"] == schemes["FleetToken"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            responses = op["responses"]
            assert "422" not in responses, where  # bad input is a 400, never a 422
            if op.get("parameters") or op.get("requestBody"):
                assert "400" in responses, where
            if op.get("requestBody"):
                assert "413" in responses, where
            if op.get("security"):
                assert {"401", "403"} <= set(responses), where
            for status, response in responses.items():
                if status.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_ref, where
    ops = spec["paths"]
    assert "security" not in ops["/healthz"]["get"]  # probes need no key
    assert ops["/admin/users"]["post"]["security"] == [{"APIKey": []}]
    assert ops["/agent/heartbeat"]["post"]["security"] == [{"FleetToken": []}]
    assert "409" in ops["/admin/users"]["post"]["responses"]  # a route's own errors
    section = ops["/admin/config/{section}"]["put"]["parameters"][0]
    assert (
        "queue" in section["schema"]["enum"]
        and "404" not in ops["/admin/config/{section}"]["put"]["responses"]
    )


@pytest.mark.parametrize("since", ["1700000000", "0.58", "-1", "1e9"])
async def test_a_usage_window_is_an_iso_time_not_seconds_since_1970(
    gateway: RunningGateway, since: str
) -> None:
    # pydantic alone would read these as epoch seconds; the spec says date-time.
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        resp = await client.get("/admin/usage", params={"since": since}, headers=BEARER)
        ok = await client.get(
            "/admin/usage", params={"since": "2026-05-01T00:00:00Z"}, headers=BEARER
        )
    error = refused(resp, 400, "InvalidField", "since")
    assert "must be an ISO 8601 time with a timezone" in error["message"]
    assert ok.status_code == 200, ok.text
