"""The store side of the identity API, on both engines: audited changes, key rules,
usage totals with a model filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.adapters.store import Store, audited, keys, ledger, quota, users
from corral.adapters.store.audit import search_audit
from corral.adapters.store.keycache import load_identities
from corral.adapters.store.records import UsageEntry
from corral.core.errors import BadRequest, NotFound
from tests.store.conftest import SECRET

T0 = datetime(2026, 5, 4, 12, tzinfo=UTC)


async def test_a_change_whose_audit_event_is_refused_is_not_stored(store: Store) -> None:
    # An actor name the audit log refuses fails the whole transaction, change included.
    with pytest.raises(BadRequest):
        await audited.create_user(store, "", "alice")
    with pytest.raises(NotFound):
        await users.get_user(store, "alice")
    await audited.create_group(store, "root", "lab", weight=1)
    with pytest.raises(BadRequest):
        await audited.update_group(store, "x" * 200, "lab", weight=5)
    assert (await users.get_group(store, "lab")).weight == 1.0
    assert [e.action for e in (await search_audit(store)).items] == ["group.create"]


async def test_disabling_a_user_revokes_every_live_key_in_one_event(store: Store) -> None:
    _, first = await audited.create_user(
        store, "root", "alice", key=audited.KeySpec(), server_secret=SECRET
    )
    assert first is not None
    second = await audited.create_key(store, "root", "alice", SECRET, audited.KeySpec())
    done, revoked = await audited.disable_user(store, "root", "alice")
    assert done.disabled and sorted(revoked) == sorted([first.key.prefix, second.key.prefix])
    assert await load_identities(store, datetime.now(UTC)) == {}
    [event] = (await search_audit(store, action="user.delete")).items
    assert event.after["revoked_keys"] == revoked
    assert await audited.live_key_count(store, "alice") == 0


async def test_only_an_admin_holds_the_admin_scope(store: Store) -> None:
    await users.create_user(store, "alice")
    with pytest.raises(BadRequest) as refused:
        await keys.create_key(store, "alice", SECRET, scopes=["admin"])
    assert refused.value.param == "scopes"
    await audited.create_user(
        store,
        "root",
        "ops",
        role="admin",
        key=audited.KeySpec(scopes=("inference", "admin")),
        server_secret=SECRET,
    )
    [before] = (await load_identities(store, datetime.now(UTC))).values()
    assert before.scopes == {"inference", "admin"}
    await audited.update_user(store, "root", "ops", role="user")
    [after] = (await load_identities(store, datetime.now(UTC))).values()
    assert after.scopes == {"inference"}  # demoted: the key keeps the rest


async def test_a_quota_request_decided_by_an_actor_who_is_no_user(store: Store) -> None:
    await users.create_user(store, "sam")
    await quota.set_user_budget(store, "sam", 100)
    asked = await quota.file_quota_request(store, "sam", 50, actor="sam")
    done = await quota.decide_quota_request(
        store, asked.id, approve=True, decided_by="env", decider_is_user=False
    )
    assert (done.status, done.decided_by) == ("approved", None)
    assert (await quota.effective_budget(store, "sam")).tokens == 150
    actions = [(e.actor, e.action) for e in (await search_audit(store)).items]
    assert actions == [("env", "quota_request.approved"), ("sam", "quota_request.file")]


async def test_usage_totals_filter_by_model_and_say_when_more_follow(store: Store) -> None:
    alice = await users.create_user(store, "alice")
    rows = [
        UsageEntry(f"r{i}", T0 + timedelta(minutes=i), model, "ollama", 200, user_id=alice.id)
        for i, model in enumerate(["a", "b", "b", "c"])
    ]
    assert await ledger.record_usage_batch(store, rows) == 4
    only_b = await ledger.usage_totals(store, group_by="user", model="b")
    assert [(t.key, t.requests) for t in only_b.items] == [("alice", 2)]
    first = await ledger.usage_totals(store, group_by="model", limit=2)
    assert [t.key for t in first.items] == ["a", "b"] and first.more
    last = await ledger.usage_totals(store, group_by="model", limit=2, offset=2)
    assert [t.key for t in last.items] == ["c"] and not last.more
    assert (await ledger.usage_totals(store, user="nobody")).items == []


async def test_keys_are_listed_per_user_and_an_unknown_user_is_named(store: Store) -> None:
    await users.create_user(store, "alice")
    await users.create_user(store, "bob")
    mine = await keys.create_key(store, "alice", SECRET)
    await keys.create_key(store, "bob", SECRET)
    listed = await keys.list_all_keys(store, user="alice")
    assert [k.prefix for k in listed.items] == [mine.key.prefix]
    with pytest.raises(NotFound) as unknown:
        await keys.list_all_keys(store, user="carol")
    assert unknown.value.param == "user"
    found = await keys.find_key_by_prefix(store, mine.key.prefix)
    assert found is not None and found.user_name == "alice"
