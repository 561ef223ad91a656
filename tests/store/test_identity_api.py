"""The admin identity API on a live gateway, on SQLite and on PostgreSQL.

Users, groups, keys, budgets, quota requests and usage through ``/admin/...``: what
each route does, that each change takes effect on the very next request (the key
cache reloads only every 60 s here), that each is audited without secrets, and that
bad input gets a clear 4xx naming the field with nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import ollama
import openai
import pytest

from corral.adapters.store import Store
from corral.adapters.store.audit import search_audit
from corral.adapters.store.keys import KEY_RE
from corral.adapters.store.ledger import query_usage
from tests.store.identity_api import (
    ENV_KEY,
    MODEL,
    OTHER_MODEL,
    Api,
    bearer,
    eventually,
    identity_api,
)

SQLISH = ["robert'); DROP TABLE users;--", "x' OR '1'='1", 'a"b\\c', "50%_off", "üñí©ødé"]


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[Api]:
    async with identity_api(store, tmp_path) as running:
        yield running


async def _audit_text(store: Store) -> str:
    events = await search_audit(store, limit=1000)
    return json.dumps([[e.actor, e.action, e.target, e.before, e.after] for e in events.items])


async def test_a_user_made_through_the_api_gets_a_key_shown_once_that_works(api: Api) -> None:
    assert (await api.call("POST", "/admin/groups", body={"name": "faculty"})).status_code == 201
    made = await api.call(
        "POST", "/admin/users", body={"name": "alice", "group": "faculty", "key": {}}
    )
    assert made.status_code == 201
    body = made.json()
    key = body["key"]["key"]
    assert KEY_RE.fullmatch(key) and body["key"]["prefix"] == key[4:12]
    assert body["user"] == {**body["user"], "name": "alice", "role": "user", "group": "faculty"}
    assert body["key"]["scopes"] == ["inference"] and body["key"]["state"] == "active"
    assert (await api.generate(key)).status_code == 200
    # Never again: not in lists, the user's record, or the audit log.
    listed = await api.call("GET", "/admin/keys?user=alice")
    shown = await api.call("GET", "/admin/users/alice")
    assert [k["prefix"] for k in listed.json()["items"]] == [key[4:12]]
    assert key not in listed.text and key not in shown.text
    assert shown.json()["budget"] == {"token_budget": None, "period": "month", "source": "none"}
    audit = await _audit_text(api.store)
    assert key[4:12] in audit and key not in audit
    root_made = (await search_audit(api.store, action="user.create", target="root")).items
    assert [e.actor for e in root_made] == ["env"]  # CORRAL_ADMIN_KEY made root
    [event] = (await search_audit(api.store, action="user.create", target="alice")).items
    assert event.actor == "root" and event.before is None
    assert event.after["key"]["prefix"] == key[4:12] and event.after["group"] == "faculty"


async def test_a_key_revoked_through_the_api_is_refused_at_once_by_both_clients(
    api: Api,
) -> None:
    await api.make_user("alice")
    made = await api.call("POST", "/admin/users/alice/keys", body={"name": "laptop"})
    assert made.status_code == 201
    key, prefix = made.json()["key"], made.json()["prefix"]
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    local = ollama.AsyncClient(host=api.url, headers=bearer(key))
    async with openai.AsyncOpenAI(base_url=api.url + "/v1", api_key=key, max_retries=0) as oai:
        try:
            assert (await local.chat(**chat)).message.content
            assert (await oai.chat.completions.create(**chat, max_tokens=4)).choices
            revoked = await api.call("DELETE", f"/admin/keys/{prefix}")
            assert revoked.status_code == 200
            assert revoked.json()["state"] == "revoked"
            with pytest.raises(ollama.ResponseError) as refused:
                await local.chat(**chat)
            assert refused.value.status_code == 401
            with pytest.raises(openai.AuthenticationError):
                await oai.chat.completions.create(**chat, max_tokens=4)
        finally:
            await local.close()
    again = await api.call("DELETE", f"/admin/keys/{prefix}")
    assert again.status_code == 200 and again.json()["revoked"]
    [event, _] = (await search_audit(api.store, action="key.revoke", target=prefix)).items
    assert event.before["revoked"] is True and event.actor == "root"


async def test_deleting_a_user_disables_them_and_revokes_their_keys_but_keeps_usage(
    api: Api,
) -> None:
    first = await api.make_user("alice")
    second = (await api.call("POST", "/admin/users/alice/keys", body={})).json()["key"]
    assert (await api.generate(first)).status_code == 200

    async def alice_has_usage() -> bool:
        return any(t.key == "alice" for t in await query_usage(api.store, group_by="user"))

    await eventually(alice_has_usage)
    gone = await api.call("DELETE", "/admin/users/alice")
    assert gone.status_code == 200
    assert gone.json()["user"]["disabled"] is True
    assert sorted(gone.json()["revoked_keys"]) == sorted([first[4:12], second[4:12]])
    assert (await api.generate(first)).status_code == 401
    assert (await api.generate(second)).status_code == 401
    usage = await api.call("GET", "/admin/usage?group_by=user&user=alice")
    assert usage.json()["items"][0]["key"] == "alice" and usage.json()["items"][0]["requests"] == 1
    taken = await api.call("POST", "/admin/users", body={"name": "alice"})
    assert taken.status_code == 409 and taken.json()["error"]["param"] == "name"
    back = await api.call("PATCH", "/admin/users/alice", body={"disabled": False})
    assert back.json()["disabled"] is False
    assert (await api.generate(first)).status_code == 401  # revoked keys stay revoked
    [event] = (await search_audit(api.store, action="user.delete")).items
    assert event.before["disabled"] is False and event.after["disabled"] is True


async def test_patch_changes_only_the_given_fields_and_audits_no_password(api: Api) -> None:
    assert (await api.call("POST", "/admin/groups", body={"name": "staff"})).status_code == 201
    await api.make_user("bob", group="staff", max_concurrent=3)
    changed = await api.call(
        "PATCH", "/admin/users/bob", body={"password": "correct horse battery", "group": None}
    )
    assert changed.status_code == 200
    got = changed.json()
    assert (got["group"], got["max_concurrent"], got["has_password"]) == (None, 3, True)
    removed = await api.call("PATCH", "/admin/users/bob", body={"password": None})
    assert removed.json()["has_password"] is False
    events = (await search_audit(api.store, action="user.update", target="bob")).items
    assert [e.after["password"] for e in events] == ["removed", "set"]
    assert events[1].before["group"] == "staff" and events[1].after["group"] is None
    audit = await _audit_text(api.store)
    assert "correct horse" not in audit and "$argon2" not in audit


async def test_demoting_an_admin_takes_the_admin_scope_from_their_keys_at_once(
    api: Api,
) -> None:
    ops = await api.make_user("ops", role="admin")
    assert (await api.call("GET", "/admin/users", key=ops)).status_code == 200
    demoted = await api.call("PATCH", "/admin/users/ops", body={"role": "user"})
    assert demoted.json()["role"] == "user"
    refused = await api.call("GET", "/admin/users", key=ops)
    assert refused.status_code == 403
    assert (await api.generate(ops)).status_code == 200  # still an inference key
    itself = await api.call("PATCH", "/admin/users/root", body={"role": "user"})
    assert itself.status_code == 400 and itself.json()["error"]["param"] == "role"
    assert (await api.call("DELETE", "/admin/users/root")).status_code == 400


async def test_groups_are_made_listed_and_reweighted_for_the_scheduler_at_once(
    api: Api,
) -> None:
    made = await api.call(
        "POST",
        "/admin/groups",
        body={"name": "student", "weight": 1, "token_budget": 5000, "budget_period": "week"},
    )
    assert made.status_code == 201
    key = await api.make_user("sam", group="student")
    assert (await api.call("GET", "/v1/me", key=key)).json()["group_weight"] == 1.0
    changed = await api.call("PATCH", "/admin/groups/student", body={"weight": 4})
    assert changed.json() == {
        "name": "student",
        "weight": 4.0,
        "token_budget": 5000,
        "budget_period": "week",
    }
    assert (await api.call("GET", "/v1/me", key=key)).json()["group_weight"] == 4.0
    assert api.gw.auth.keys is not None
    identity = api.gw.auth.keys.lookup(key)
    assert identity is not None and identity.group_weight == 4.0  # what routing reads
    unlimited = await api.call("PATCH", "/admin/groups/student", body={"token_budget": None})
    assert unlimited.json()["token_budget"] is None and unlimited.json()["weight"] == 4.0
    listed = await api.call("GET", "/admin/groups")
    assert [g["name"] for g in listed.json()] == ["student"]
    budget_change, reweight = (await search_audit(api.store, action="group.update")).items
    assert (reweight.before["weight"], reweight.after["weight"]) == (1.0, 4.0)
    assert budget_change.before["token_budget"] == 5000
    assert budget_change.after["token_budget"] is None


async def test_a_budget_a_quota_request_and_its_approval_take_effect_at_once(api: Api) -> None:
    key = await api.make_user("alice")
    zero = await api.call("PUT", "/admin/users/alice/budget", body={"tokens": 0, "note": "paused"})
    assert zero.json() == {"token_budget": 0, "period": "month", "source": "user", "user": "alice"}
    refused = await api.generate(key)
    assert refused.status_code == 403 and "budget" in refused.json()["error"]
    asked = await api.call(
        "POST", "/v1/quota/requests", key=key, body={"amount": 1000, "reason": "thesis"}
    )
    assert asked.status_code == 201 and asked.json()["status"] == "pending"
    other = await api.call("POST", "/v1/quota/requests", key=key, body={"amount": 5})
    pending = await api.call("GET", "/admin/quota/requests?status=pending")
    assert [r["id"] for r in pending.json()["items"]] == [asked.json()["id"], other.json()["id"]]
    approved = await api.call("POST", f"/admin/quota/requests/{asked.json()['id']}/approve")
    assert approved.status_code == 200
    assert approved.json()["request"]["status"] == "approved"
    assert approved.json()["request"]["decided_by"] == "root"
    assert approved.json()["budget"] == {"token_budget": 1000, "period": "month", "source": "user"}
    assert (await api.generate(key)).status_code == 200
    twice = await api.call("POST", f"/admin/quota/requests/{asked.json()['id']}/deny")
    assert twice.status_code == 409
    async with api.client(ENV_KEY) as env:  # the automation key decides too
        denied = await env.post(f"/admin/quota/requests/{other.json()['id']}/deny")
    assert denied.json()["request"]["decided_by"] is None
    assert denied.json()["budget"]["token_budget"] == 1000
    [decision] = (await search_audit(api.store, action="quota_request.denied")).items
    assert decision.actor == "env"
    cleared = await api.call("DELETE", "/admin/users/alice/budget")
    assert cleared.json()["source"] == "none" and cleared.json()["token_budget"] is None
    actions = [e.action for e in (await search_audit(api.store, target="alice")).items]
    for action in ("budget.set", "budget.clear", "quota_request.file", "quota_request.approved"):
        assert action in actions


async def test_usage_is_summed_by_user_model_and_day_with_filters(api: Api) -> None:
    alice, bob = await api.make_user("alice"), await api.make_user("bob")
    for key, model in ((alice, MODEL), (alice, OTHER_MODEL), (bob, MODEL)):
        assert (await api.generate(key, model)).status_code == 200

    async def three_rows() -> bool:
        return sum(t.requests for t in await query_usage(api.store, group_by="model")) >= 3

    await eventually(three_rows)
    by_user = (await api.call("GET", "/admin/usage")).json()
    assert by_user["group_by"] == "user"
    assert {r["key"]: r["requests"] for r in by_user["items"]} == {"alice": 2, "bob": 1}
    row = by_user["items"][0]
    assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"] > 0
    by_model = (await api.call("GET", "/admin/usage?group_by=model&user=alice")).json()
    assert {r["key"]: r["requests"] for r in by_model["items"]} == {MODEL: 1, OTHER_MODEL: 1}
    one_model = (await api.call("GET", f"/admin/usage?group_by=user&model={MODEL}")).json()
    assert {r["key"]: r["requests"] for r in one_model["items"]} == {"alice": 1, "bob": 1}
    by_day = (await api.call("GET", "/admin/usage?group_by=day")).json()
    assert len(by_day["items"]) == 1 and by_day["items"][0]["requests"] == 3
    paged = (await api.call("GET", "/admin/usage?group_by=model&limit=1")).json()
    assert len(paged["items"]) == 1 and paged["more"] is True
    future = quote("2999-01-01T00:00:00+00:00")
    assert (await api.call("GET", f"/admin/usage?since={future}")).json()["items"] == []
    backwards = await api.call("GET", f"/admin/usage?since={future}&until=2000-01-01T00:00:00Z")
    assert backwards.status_code == 400 and backwards.json()["error"]["param"] == "until"


@pytest.mark.parametrize("name", SQLISH)
async def test_sql_ish_names_are_stored_and_addressed_literally(api: Api, name: str) -> None:
    made = await api.call("POST", "/admin/users", body={"name": name, "key": {}})
    assert made.status_code == 201
    got = await api.call("GET", f"/admin/users/{quote(name, safe='')}")
    assert got.status_code == 200 and got.json()["name"] == name
    listed = await api.call("GET", "/admin/users")
    assert sorted(u["name"] for u in listed.json()["items"]) == sorted(["root", name])
    assert (await api.generate(made.json()["key"]["key"])).status_code == 200


ALLOWED = "allowed_models"
BAD_INPUT = [
    ("POST", "/admin/users", {"name": "x", "role": "boss"}, 400, "role"),
    ("POST", "/admin/users", {"name": "a/b"}, 400, "name"),
    ("POST", "/admin/users", {"name": " padded"}, 400, "name"),
    ("POST", "/admin/users", {"name": "x" * 129}, 400, "name"),
    ("POST", "/admin/users", {"name": "x", "nickname": "y"}, 400, "nickname"),
    ("POST", "/admin/users", {"name": "x", "max_concurrent": -1}, 400, "max_concurrent"),
    ("POST", "/admin/users", {"name": "x", "max_concurrent": 2**40}, 400, "max_concurrent"),
    ("POST", "/admin/users", {"name": "x", "group": "nope"}, 404, "group"),
    ("POST", "/admin/users", {"name": "x", "password": ""}, 400, "password"),
    ("POST", "/admin/users", {"name": "x", "key": {"scopes": ["admin"]}}, 400, "scopes"),
    ("POST", "/admin/users", {"name": "x", "key": {"scopes": ["root"]}}, 400, "key.scopes[0]"),
    ("POST", "/admin/users", {"name": "x", "key": {"rpm_limit": -1}}, 400, "key.rpm_limit"),
    # The store refuses the key after the user was inserted: the transaction takes both back.
    ("POST", "/admin/users", {"name": "x", "key": {"allowed_models": [" m"]}}, 400, ALLOWED),
    ("POST", "/admin/users/root/keys", {"tpm_limit": 2**31}, 400, "tpm_limit"),
    ("POST", "/admin/users/root/keys", {"expires_at": "2030-01-01T00:00:00"}, 400, "expires_at"),
    ("POST", "/admin/users/root/keys", {"expires_at": "2001-01-01T00:00:00Z"}, 400, "expires_at"),
    ("POST", "/admin/users/root/keys", {"expires_in_days": 0}, 400, "expires_in_days"),
    ("POST", "/admin/users/root/keys", {"allowed_models": ["a\nb"]}, 400, "allowed_models"),
    ("POST", "/admin/users/nobody/keys", {}, 404, "name"),
    ("GET", "/admin/users?limit=5000", None, 400, "limit"),
    ("GET", "/admin/users?limit=-1", None, 400, "limit"),
    ("GET", "/admin/users?offset=-1", None, 400, "offset"),
    ("GET", "/admin/keys?limit=1001", None, 400, "limit"),
    ("GET", "/admin/keys?user=nobody", None, 404, "user"),
    ("GET", "/admin/users/nobody", None, 404, "name"),
    ("PATCH", "/admin/users/nobody", {"disabled": True}, 404, "name"),
    ("PATCH", "/admin/users/root", {}, 400, "body"),
    ("PATCH", "/admin/groups/nobody", {"weight": 2}, 404, "name"),
    ("POST", "/admin/groups", {"name": "g", "weight": -1}, 400, "weight"),
    ("POST", "/admin/groups", {"name": "g", "budget_period": "year"}, 400, "budget_period"),
    ("DELETE", "/admin/keys/NOT-A-KEY", None, 400, "prefix"),
    ("DELETE", "/admin/keys/abcd1234", None, 404, "prefix"),
    ("PUT", "/admin/users/root/budget", {"tokens": -5}, 400, "tokens"),
    ("PUT", "/admin/users/root/budget", {"tokens": 2**64}, 400, "tokens"),
    ("PUT", "/admin/users/root/budget", {"note": "no tokens field"}, 400, "tokens"),
    ("DELETE", "/admin/users/nobody/budget", None, 404, "name"),
    ("GET", "/admin/quota/requests?status=maybe", None, 400, "status"),
    ("POST", "/admin/quota/requests/999999/approve", None, 404, "id"),
    ("POST", "/admin/quota/requests/0/deny", None, 400, "id"),
    ("POST", f"/admin/quota/requests/{2**40}/deny", None, 400, "id"),
    ("GET", "/admin/usage?group_by=week", None, 400, "group_by"),
    ("GET", "/admin/usage?since=2026-01-01T00:00:00", None, 400, "since"),
]


async def test_bad_input_gets_a_clear_4xx_naming_the_field(api: Api) -> None:
    for method, path, body, status, param in BAD_INPUT:
        resp = await api.call(method, path, body=body)
        assert resp.status_code == status, (method, path, body, resp.text)
        error = resp.json()["error"]
        assert error["param"] == param, (method, path, body, error)
        assert error["message"]
    async with api.client(api.root) as client:
        broken = await client.post(
            "/admin/users", content=b'{"name": ', headers={"content-type": "application/json"}
        )
    assert broken.status_code == 400
    # Nothing half-written: a user whose first key the store refused was not made either.
    users = (await api.call("GET", "/admin/users")).json()["items"]
    assert [u["name"] for u in users] == ["root"]
    assert (await api.call("GET", "/admin/groups")).json() == []
