"""The control plane's frame: health routes, the OpenAPI spec, its error shape."""

from __future__ import annotations

import httpx

from corral.adapters.store.keys import ADMIN_KEY_ENV
from corral.sim.launch import NodeSpec
from tests.helpers import run_gateway, sim_fleet

ADMIN = "crl_" + "a" * 40


async def test_healthz_answers_while_the_process_serves() -> None:
    async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        resp = await client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_readyz_is_503_without_a_healthy_backend() -> None:
    async with (
        run_gateway(["http://127.0.0.1:9"]) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        resp = await client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["ready"] is False
    assert body["checks"] == {"store": True, "migrations": True, "backends": False}


async def test_readyz_is_ready_with_a_healthy_backend() -> None:
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(base_url=fleet.url) as client:
        resp = await client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {
        "ready": True,
        "checks": {"store": True, "migrations": True, "backends": True},
        "healthy_backends": 1,
    }


async def test_health_routes_need_no_key_when_auth_is_on() -> None:
    async with (
        run_gateway([], auth={"mode": "on"}, environ={ADMIN_KEY_ENV: ADMIN}) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503  # no backends, not a 401


async def test_openapi_spec_lists_the_control_routes_not_the_inference_ones() -> None:
    async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert spec["info"]["title"] == "Corral"
    assert {"/healthz", "/readyz"} <= set(spec["paths"])
    assert "/api/chat" not in spec["paths"]
    assert docs.status_code == 200


async def test_unknown_paths_keep_their_dialects_error_shape() -> None:
    async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        ollama = await client.get("/api/nothing")
        control = await client.get("/admin/nothing")
    assert ollama.status_code == 404
    assert isinstance(ollama.json()["error"], str)
    assert control.status_code == 404
    assert control.json()["error"]["type"] == "not_found_error"
