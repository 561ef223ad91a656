"""Self-service on a live gateway, on SQLite and on PostgreSQL: a key holder sees and
manages what is their own user's, and never anything stronger or anyone else's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from corral.adapters.store import Store
from corral.adapters.store.audit import search_audit
from corral.adapters.store.keys import ADMIN_KEY_ENV, KEY_RE
from corral.adapters.store.ledger import query_usage
from tests.helpers import run_gateway
from tests.store.identity_api import (
    ENV_KEY,
    MODEL,
    OTHER_MODEL,
    Api,
    eventually,
    identity_api,
)

SELF_SERVICE = [
    ("GET", "/v1/me", None),
    ("POST", "/v1/keys", {}),
    ("GET", "/v1/keys", None),
    ("DELETE", "/v1/keys/abcd1234", None),
    ("GET", "/v1/usage", None),
    ("GET", "/v1/quota", None),
    ("POST", "/v1/quota/requests", {"amount": 10}),
    ("GET", "/v1/quota/requests", None),
]


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[Api]:
    async with identity_api(store, tmp_path) as running:
        yield running


async def test_me_says_whom_the_key_speaks_for(api: Api) -> None:
    assert (await api.call("POST", "/admin/groups", body={"name": "lab", "weight": 2})).is_success
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    key = await api.make_user(
        "alice",
        group="lab",
        max_concurrent=4,
        key={"allowed_models": [MODEL], "rpm_limit": 60, "expires_at": expires},
    )
    me = (await api.call("GET", "/v1/me", key=key)).json()
    assert me["user"] == "alice" and me["role"] == "user"
    assert (me["group"], me["group_weight"], me["max_concurrent"]) == ("lab", 2.0, 4)
    assert (me["scopes"], me["key_prefix"]) == (["inference"], key[4:12])
    assert (me["allowed_models"], me["rpm_limit"], me["tpm_limit"]) == ([MODEL], 60, None)
    assert datetime.fromisoformat(me["key_expires_at"]) == datetime.fromisoformat(expires)


async def test_a_user_makes_lists_and_revokes_only_their_own_keys(api: Api) -> None:
    alice, bob = await api.make_user("alice"), await api.make_user("bob")
    made = await api.call("POST", "/v1/keys", key=alice, body={"name": "ci"})
    assert made.status_code == 201
    new = made.json()["key"]
    assert KEY_RE.fullmatch(new) and made.json()["user"] == "alice"
    assert (await api.generate(new)).status_code == 200
    listed = await api.call("GET", "/v1/keys", key=alice)
    assert [k["prefix"] for k in listed.json()["items"]] == [alice[4:12], new[4:12]]
    assert new not in listed.text
    # Bob's prefix is no key of Alice's: the same 404 as no key at all.
    other = await api.call("DELETE", f"/v1/keys/{bob[4:12]}", key=alice)
    assert other.status_code == 404 and other.json()["error"]["param"] == "prefix"
    assert (await api.generate(bob)).status_code == 200
    gone = await api.call("DELETE", f"/v1/keys/{new[4:12]}", key=alice)
    assert gone.status_code == 200 and gone.json()["state"] == "revoked"
    assert (await api.generate(new)).status_code == 401
    # A key may revoke itself; the next call with it is refused.
    assert (await api.call("DELETE", f"/v1/keys/{alice[4:12]}", key=alice)).status_code == 200
    assert (await api.call("GET", "/v1/me", key=alice)).status_code == 401
    events = (await search_audit(api.store, actor="alice")).items
    assert [e.action for e in events] == ["key.revoke", "key.revoke", "key.create"]


async def test_a_key_cannot_mint_a_stronger_key(api: Api) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    limited = await api.make_user(
        "alice",
        key={
            "allowed_models": [MODEL],
            "rpm_limit": 10,
            "tpm_limit": 1000,
            "expires_at": soon.isoformat(),
        },
    )
    later = (soon + timedelta(days=1)).isoformat()
    refusals = [
        ({"scopes": ["admin"]}, "scopes"),
        ({"scopes": ["inference", "models"]}, "scopes"),
        ({"allowed_models": [OTHER_MODEL]}, "allowed_models"),
        ({"rpm_limit": 11}, "rpm_limit"),
        ({"tpm_limit": 5000}, "tpm_limit"),
        ({"expires_at": later}, "expires_at"),
        ({"expires_in_days": 30}, "expires_at"),
    ]
    for body, param in refusals:
        resp = await api.call("POST", "/v1/keys", key=limited, body=body)
        assert resp.status_code == 403, (body, resp.text)
        assert resp.json()["error"]["param"] == param
    inherited = (await api.call("POST", "/v1/keys", key=limited, body={})).json()
    assert inherited["allowed_models"] == [MODEL] and inherited["scopes"] == ["inference"]
    assert (inherited["rpm_limit"], inherited["tpm_limit"]) == (10, 1000)
    assert datetime.fromisoformat(inherited["expires_at"]) == soon
    narrower = await api.call("POST", "/v1/keys", key=limited, body={"rpm_limit": 2})
    assert narrower.status_code == 201 and narrower.json()["rpm_limit"] == 2
    refused = await api.generate(inherited["key"], OTHER_MODEL)
    assert refused.status_code == 403
    # An admin's key may mint an admin key; only the scopes it holds, still.
    ops = await api.make_user("ops", role="admin", key={"scopes": ["admin"]})
    minted = await api.call("POST", "/v1/keys", key=ops, body={})
    assert minted.status_code == 201 and minted.json()["scopes"] == ["admin"]


async def test_own_usage_and_quota_show_the_budget_left(api: Api) -> None:
    alice, bob = await api.make_user("alice"), await api.make_user("bob")
    quota = await api.call("PUT", "/admin/users/alice/budget", body={"tokens": 100_000})
    assert quota.status_code == 200
    for key, model in ((alice, MODEL), (alice, OTHER_MODEL), (bob, MODEL)):
        assert (await api.generate(key, model)).status_code == 200

    async def three_rows() -> bool:
        return sum(t.requests for t in await query_usage(api.store, group_by="user")) >= 3

    await eventually(three_rows)
    mine = (await api.call("GET", "/v1/usage", key=alice)).json()
    assert mine["group_by"] == "model"
    assert {r["key"]: r["requests"] for r in mine["items"]} == {MODEL: 1, OTHER_MODEL: 1}
    spent = sum(r["total_tokens"] for r in mine["items"])
    assert spent > 0
    assert mine["quota"]["used"] == spent
    assert mine["quota"]["remaining"] == 100_000 - spent
    by_user = (await api.call("GET", "/v1/usage?group_by=user", key=alice)).json()
    assert [(r["key"], r["requests"]) for r in by_user["items"]] == [("alice", 2)]
    left = (await api.call("GET", "/v1/quota", key=alice)).json()
    now = datetime.now(UTC)
    assert (left["token_budget"], left["source"], left["period"]) == (100_000, "user", "month")
    assert datetime.fromisoformat(left["period_start"]) <= now
    assert datetime.fromisoformat(left["resets_at"]) > now
    free = (await api.call("GET", "/v1/quota", key=bob)).json()
    assert (free["token_budget"], free["remaining"], free["source"]) == (None, None, "none")
    assert free["used"] > 0  # read from the ledger when there is no budget


async def test_quota_requests_are_filed_and_listed_by_their_owner_only(api: Api) -> None:
    alice, bob = await api.make_user("alice"), await api.make_user("bob")
    filed = await api.call(
        "POST", "/v1/quota/requests", key=alice, body={"amount": 500, "reason": "deadline"}
    )
    assert filed.status_code == 201
    assert (filed.json()["user"], filed.json()["status"]) == ("alice", "pending")
    assert (await api.call("GET", "/v1/quota/requests", key=bob)).json()["items"] == []
    mine = (await api.call("GET", "/v1/quota/requests?status=pending", key=alice)).json()
    assert [r["id"] for r in mine["items"]] == [filed.json()["id"]]
    for body, param in (({"amount": 0}, "amount"), ({"amount": 5, "why": "x"}, "why")):
        bad = await api.call("POST", "/v1/quota/requests", key=alice, body=body)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param
    for _ in range(9):
        made = await api.call("POST", "/v1/quota/requests", key=alice, body={"amount": 1})
        assert made.status_code == 201
    eleventh = await api.call("POST", "/v1/quota/requests", key=alice, body={"amount": 1})
    assert eleventh.status_code == 409


async def test_the_admin_key_from_the_environment_has_no_self_service(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        for method, path, body in SELF_SERVICE:
            resp = await client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {ENV_KEY}"}
            )
            assert resp.status_code == 403, (path, resp.text)
            assert "CORRAL_ADMIN_KEY" in resp.json()["error"]["message"]


async def test_without_keys_self_service_says_so_and_the_admin_api_is_local(
    tmp_path: Path,
) -> None:
    async with (
        run_gateway([], data_dir=str(tmp_path), environ={ADMIN_KEY_ENV: ENV_KEY}) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        assert not running.gw.auth.enabled
        for method, path, body in SELF_SERVICE:
            resp = await client.request(method, path, json=body)
            assert resp.status_code == 400, (path, resp.text)
            assert "API keys are off" in resp.json()["error"]["message"]
        made = await client.post("/admin/users", json={"name": "alice"})
        assert made.status_code == 201
        assert running.gw.store is not None
        [event] = (await search_audit(running.gw.store, action="user.create")).items
        assert event.actor == "local"
