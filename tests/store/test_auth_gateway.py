"""API keys on the live gateway: real sockets, real SQLite and PostgreSQL stores.

The matrix: every management route and model list by {no key, user key, models-scoped
key, admin key}; inference with missing, wrong, expired, revoked and valid keys in
both dialects, with the official ``ollama`` and ``openai`` clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from corral.adapters.store import Store
from corral.adapters.store.keys import create_key, create_user_with_key, load_or_create_secret
from corral.adapters.store.keys import revoke_key as store_revoke
from corral.adapters.store.users import create_group
from tests.helpers import SimFleet, sim_fleet

MODEL = "llama3.2:1b"
ADMIN_ENV_KEY = "crl_" + "e" * 44


@dataclass
class Keys:
    admin: str
    user: str
    models_only: str
    modeler: str
    one_model: str
    expired: str
    revoked: str


@dataclass
class Secured:
    fleet: SimFleet
    keys: Keys
    store: Store

    @property
    def url(self) -> str:
        return self.fleet.url


async def _make_keys(store: Store, secret: bytes) -> Keys:
    await create_group(store, "faculty", weight=3)
    _, admin = await create_user_with_key(
        store, "root", secret, role="admin", scopes=("inference", "admin", "models")
    )
    _, alice = await create_user_with_key(store, "alice", secret, group="faculty")
    _, ops = await create_user_with_key(store, "ops", secret, scopes=("models",))
    modeler = await create_key(store, "ops", secret, scopes=("models", "inference"))
    one = await create_key(store, "alice", secret, allowed_models=[MODEL])
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = await create_key(store, "alice", secret, expires_at=past)
    revoked = await create_key(store, "alice", secret)
    await store_revoke(store, revoked.key.prefix)
    return Keys(
        admin=admin.plaintext,
        user=alice.plaintext,
        models_only=ops.plaintext,
        modeler=modeler.plaintext,
        one_model=one.plaintext,
        expired=expired.plaintext,
        revoked=revoked.plaintext,
    )


@pytest.fixture
async def secured(store: Store, tmp_path: Path) -> AsyncIterator[Secured]:
    secret = load_or_create_secret(tmp_path / "secret.key")
    keys = await _make_keys(store, secret)
    async with sim_fleet(
        store=store,
        data_dir=str(tmp_path),
        environ={"CORRAL_ADMIN_KEY": ADMIN_ENV_KEY},
        auth={"mode": "on", "reload_s": 0.2},
    ) as fleet:
        yield Secured(fleet, keys, store)


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key is not None else {}


BLOB = b"some layer bytes"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
MANAGEMENT = [
    ("POST", "/api/pull", {"model": MODEL, "stream": False}),
    ("POST", "/api/push", {"model": MODEL, "stream": False}),
    ("POST", "/api/create", {"model": "mine", "from": MODEL, "stream": False}),
    ("POST", "/api/copy", {"source": MODEL, "destination": "copy:latest"}),
    ("DELETE", "/api/delete", {"model": "copy:latest"}),
    ("HEAD", f"/api/blobs/{DIGEST}", None),
    ("POST", f"/api/blobs/{DIGEST}", BLOB),
]
LISTS = ["/api/tags", "/api/ps", "/v1/models"]


async def test_every_management_route_and_model_list_by_role(secured: Secured) -> None:
    k = secured.keys
    wanted = {None: 401, k.user: 403, k.models_only: 0, k.admin: 0, ADMIN_ENV_KEY: 0}
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as client:
        for method, path, body in MANAGEMENT:
            for key, status in wanted.items():
                kwargs: dict[str, object] = {"headers": bearer(key)}
                if isinstance(body, bytes):
                    kwargs["content"] = body
                elif body is not None:
                    kwargs["json"] = body
                resp = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
                if status:
                    assert resp.status_code == status, (method, path, key, resp.text)
                else:
                    assert resp.status_code < 400 or resp.status_code == 404, (
                        method,
                        path,
                        resp.text,
                    )
        lists = {None: 401, k.user: 200, k.models_only: 403, k.admin: 200, "crl_nope": 401}
        for path in LISTS:
            for key, status in lists.items():
                resp = await client.get(path, headers=bearer(key))
                assert resp.status_code == status, (path, key, resp.text)
        for path in ("/", "/api/version"):  # Ollama clients call these before anything else
            assert (await client.get(path)).status_code == 200


async def test_inference_refuses_bad_keys_in_each_dialect(secured: Secured) -> None:
    k = secured.keys
    ollama_body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    openai_body = {**ollama_body, "max_tokens": 4}
    cases = {
        None: 401,
        "crl_wrongwro_" + "x" * 40: 401,
        "not even a key": 401,
        k.expired: 401,
        k.revoked: 401,
        k.models_only: 403,
        k.user: 200,
        k.one_model: 200,
        ADMIN_ENV_KEY: 200,
    }
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as client:
        for key, status in cases.items():
            resp = await client.post(
                "/api/chat", json={**ollama_body, "stream": False}, headers=bearer(key)
            )
            assert resp.status_code == status, (key, resp.text)
            if status == 401:
                assert resp.headers["www-authenticate"] == "Bearer"
                assert isinstance(resp.json()["error"], str)
            resp = await client.post("/v1/chat/completions", json=openai_body, headers=bearer(key))
            assert resp.status_code == status, (key, resp.text)
            if status == 401:
                error = resp.json()["error"]
                assert error["type"] == "invalid_request_error"
                assert error["code"] == "invalid_api_key"
                assert resp.headers["www-authenticate"] == "Bearer"
        # Basic auth, or a bare key without the scheme, is no bearer token.
        resp = await client.post(
            "/api/chat", json=ollama_body, headers={"Authorization": f"Basic {k.user}"}
        )
        assert resp.status_code == 401
        other = {**ollama_body, "model": "qwen2.5:0.5b", "stream": False}
        resp = await client.post("/api/chat", json=other, headers=bearer(k.one_model))
        assert resp.status_code == 403 and "qwen2.5:0.5b" in resp.json()["error"]
        resp = await client.post(
            "/v1/chat/completions",
            json={**openai_body, "model": "qwen2.5:0.5b"},
            headers=bearer(k.one_model),
        )
        assert resp.status_code == 403
        assert resp.json()["error"]["param"] == "model"


async def test_the_official_clients_send_keys(secured: Secured) -> None:
    k = secured.keys
    good = ollama.AsyncClient(host=secured.url, headers=bearer(k.user))
    bad = ollama.AsyncClient(host=secured.url, headers=bearer(k.revoked))
    try:
        reply = await good.chat(MODEL, messages=[{"role": "user", "content": "hi"}])
        assert reply.message.content
        with pytest.raises(ollama.ResponseError) as refused:
            await bad.chat(MODEL, messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 401
    finally:
        await good.close()
        await bad.close()
    async with openai.AsyncOpenAI(base_url=secured.url + "/v1", api_key=k.user) as client:
        done = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert done.choices[0].message.content
        listed = await client.models.list()
        assert MODEL in [m.id for m in listed.data]
    async with openai.AsyncOpenAI(base_url=secured.url + "/v1", api_key=k.expired) as client:
        with pytest.raises(openai.AuthenticationError) as denied:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        assert denied.value.code == "invalid_api_key"


async def test_the_key_user_is_the_tenant_and_is_in_the_usage_record(secured: Secured) -> None:
    body = {"model": MODEL, "prompt": "hi", "stream": False}
    headers = {**bearer(secured.keys.user), "X-Corral-Tenant": "someone-else"}
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as client:
        resp = await client.post("/api/generate", json=body, headers=headers)
        assert resp.status_code == 200
        resp = await client.post("/api/generate", json=body, headers=bearer(ADMIN_ENV_KEY))
        assert resp.status_code == 200
    mine, env = list(secured.fleet.gw.usage)[-2:]
    assert (mine.tenant, mine.user) == ("alice", "alice")
    assert mine.key_prefix == secured.keys.user[4:12]
    assert (env.user, env.key_prefix) == (None, "env")


async def test_a_key_revoked_in_the_store_stops_working(secured: Secured) -> None:
    body = {"model": MODEL, "prompt": "hi", "stream": False}
    key = secured.keys.user
    async with httpx.AsyncClient(base_url=secured.url, timeout=30) as client:
        assert (
            await client.post("/api/generate", json=body, headers=bearer(key))
        ).status_code == 200
        await store_revoke(secured.store, key[4:12])
        await secured.fleet.gw.auth.reload()  # what a change made by the gateway does
        resp = await client.post("/api/generate", json=body, headers=bearer(key))
        assert resp.status_code == 401


async def _cli(*args: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "corral",
        *args,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def test_a_key_made_and_revoked_with_the_cli_arrives_within_the_reload(
    tmp_path: Path,
) -> None:
    env = {"CORRAL_DATA_DIR": str(tmp_path)}
    body = {"model": MODEL, "prompt": "hi", "stream": False}
    async with sim_fleet(data_dir=str(tmp_path), auth={"mode": "on", "reload_s": 0.2}) as fleet:
        key = await _cli("users", "create", "bob", env=env)
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            for _ in range(100):  # well within 20 reloads
                resp = await client.post("/api/generate", json=body, headers=bearer(key))
                if resp.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert resp.status_code == 200
            await _cli("keys", "revoke", key[4:12], env=env)
            for _ in range(100):
                resp = await client.post("/api/generate", json=body, headers=bearer(key))
                if resp.status_code == 401:
                    break
                await asyncio.sleep(0.05)
            assert resp.status_code == 401


async def test_auto_is_open_on_loopback_and_on_elsewhere(tmp_path: Path) -> None:
    body = {"model": MODEL, "prompt": "hi", "stream": False}
    async with sim_fleet(data_dir=str(tmp_path)) as fleet, httpx.AsyncClient() as client:
        assert not fleet.gw.auth.enabled
        assert (await client.post(fleet.url + "/api/generate", json=body)).status_code == 200
    # The socket is still loopback; the setting is what decides.
    async with sim_fleet(data_dir=str(tmp_path), host="0.0.0.0") as fleet:
        assert fleet.gw.auth.enabled
        async with httpx.AsyncClient() as client:
            assert (await client.post(fleet.url + "/api/generate", json=body)).status_code == 401
