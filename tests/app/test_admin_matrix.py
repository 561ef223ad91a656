"""Who may call each control-plane route, for every route the live app's spec lists.

The routes come from the running gateway's own OpenAPI spec, so a route added under
``/admin`` later is checked here without anyone adding it to a list. Each admin route
is called with no key, a malformed key, a revoked key, a user's inference key, a
user's models key, an admin's key and ``CORRAL_ADMIN_KEY``; path parameters are filled
with a name nothing has, so an admin's call finds nothing to change. The self-service
routes get the same treatment with their own expectations.

The model-management Ollama routes (pull, push, create, copy, delete, blobs) by role
are in tests/store/test_auth_gateway.py, on both store engines.
"""

from __future__ import annotations

from typing import Any

import httpx

from corral.adapters.store.keys import ADMIN_KEY_ENV
from tests.helpers import run_gateway

ENV_KEY = "crl_" + "m" * 44
UNKNOWN_NAME = "zzzzzzzz"  # also a well-formed key prefix that no key has
UNKNOWN_ID = 999_999
OURS = {
    ("POST", "/admin/users"),
    ("GET", "/admin/users"),
    ("GET", "/admin/users/{name}"),
    ("PATCH", "/admin/users/{name}"),
    ("DELETE", "/admin/users/{name}"),
    ("POST", "/admin/groups"),
    ("GET", "/admin/groups"),
    ("PATCH", "/admin/groups/{name}"),
    ("POST", "/admin/users/{name}/keys"),
    ("GET", "/admin/keys"),
    ("DELETE", "/admin/keys/{prefix}"),
    ("PUT", "/admin/users/{name}/budget"),
    ("DELETE", "/admin/users/{name}/budget"),
    ("GET", "/admin/quota/requests"),
    ("POST", "/admin/quota/requests/{id}/approve"),
    ("POST", "/admin/quota/requests/{id}/deny"),
    ("GET", "/admin/usage"),
}
SELF_SERVICE = {
    ("GET", "/v1/me"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/{prefix}"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/quota"),
    ("POST", "/v1/quota/requests"),
    ("GET", "/v1/quota/requests"),
}


def _routes(spec: dict[str, Any], prefix: str) -> list[tuple[str, str, str]]:
    """(method, path as listed, path with its parameters filled) under ``prefix``."""
    found = []
    for path, operations in spec["paths"].items():
        if not path.startswith(prefix):
            continue
        for method, op in operations.items():
            url = path
            for param in op.get("parameters", []):
                if param["in"] != "path":
                    continue
                kind = param.get("schema", {}).get("type")
                value = str(UNKNOWN_ID) if kind == "integer" else UNKNOWN_NAME
                url = url.replace("{" + param["name"] + "}", value)
            assert "{" not in url, f"unfilled parameter in {path}"
            found.append((method.upper(), path, url))
    return found


async def _keys(client: httpx.AsyncClient) -> dict[str, str]:
    """Keys made through the API itself, starting from CORRAL_ADMIN_KEY."""
    env = {"Authorization": f"Bearer {ENV_KEY}"}

    async def user(body: dict[str, Any]) -> str:
        resp = await client.post("/admin/users", json=body, headers=env)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"]["key"])

    admin = await user({"name": "root", "role": "admin", "key": {}})
    inference = await user({"name": "alice", "key": {}})
    models = await user({"name": "ops", "key": {"scopes": ["models"]}})
    made = await client.post("/admin/users/alice/keys", json={}, headers=env)
    revoked = made.json()["key"]
    gone = await client.delete(f"/admin/keys/{made.json()['prefix']}", headers=env)
    assert gone.status_code == 200
    return {
        "admin": admin,
        "inference": inference,
        "models": models,
        "revoked": revoked,
        "malformed": "crl_not-a-key",
        "env": ENV_KEY,
    }


async def _call(
    client: httpx.AsyncClient, method: str, url: str, key: str | None
) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return await client.request(method, url, headers=headers)


def _refusal(resp: httpx.Response, status: int, where: tuple[str, str, str | None]) -> None:
    assert resp.status_code == status, (where, resp.status_code, resp.text)
    error = resp.json()["error"]  # the control plane's (OpenAI) error shape
    assert error["message"] and error["type"] == "invalid_request_error", (where, error)
    if status == 401:
        assert resp.headers["www-authenticate"] == "Bearer"


async def test_every_admin_route_needs_an_admin_key() -> None:
    async with (
        run_gateway(
            [], auth={"mode": "on", "reload_s": 60}, environ={ADMIN_KEY_ENV: ENV_KEY}
        ) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
    ):
        spec = (await client.get("/openapi.json")).json()
        routes = _routes(spec, "/admin")
        assert {(m, p) for m, p, _ in routes} >= OURS
        keys = await _keys(client)
        # Every refusal first, so no admin call below can change what they meet.
        for method, path, url in routes:
            for who, status in (
                (None, 401),
                ("malformed", 401),
                ("revoked", 401),
                ("inference", 403),
                ("models", 403),
            ):
                resp = await _call(client, method, url, keys[who] if who else None)
                _refusal(resp, status, (method, path, who))
        for method, path, url in routes:
            for who in ("admin", "env"):
                resp = await _call(client, method, url, keys[who])
                assert resp.status_code not in (401, 403), (method, path, who, resp.text)
                assert resp.status_code < 500, (method, path, who, resp.text)


async def test_every_self_service_route_needs_a_users_key() -> None:
    async with (
        run_gateway(
            [], auth={"mode": "on", "reload_s": 60}, environ={ADMIN_KEY_ENV: ENV_KEY}
        ) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
    ):
        spec = (await client.get("/openapi.json")).json()
        routes = _routes(spec, "/v1/")
        assert {(m, p) for m, p, _ in routes} >= SELF_SERVICE
        keys = await _keys(client)
        for method, path, url in routes:
            for who, status in ((None, 401), ("revoked", 401), ("env", 403)):
                resp = await _call(client, method, url, keys[who] if who else None)
                _refusal(resp, status, (method, path, who))
            for who in ("inference", "models", "admin"):
                resp = await _call(client, method, url, keys[who])
                assert resp.status_code not in (401, 403, 500), (method, path, who, resp.text)
