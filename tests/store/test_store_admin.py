"""Audit events, run-time backends and token budgets on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.adapters.store import Store, audit, backends, quota, users
from corral.core.errors import BadRequest, Conflict, NotFound

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


async def test_audit_events_are_searched_by_field_text_and_time(store: Store) -> None:
    await audit.add_audit(store, "root", "user.create", "alice", after={"role": "user"}, time=T0)
    await audit.add_audit(
        store,
        "root",
        "user.update",
        "alice",
        before={"role": "user"},
        after={"role": "admin"},
        time=T0 + timedelta(minutes=1),
    )
    await audit.add_audit(store, "bob", "key.revoke", "crl_abc", time=T0 + timedelta(minutes=2))
    everything = await audit.search_audit(store)
    assert [e.action for e in everything.items] == ["key.revoke", "user.update", "user.create"]
    assert everything.items[1].before == {"role": "user"}
    assert everything.items[1].after == {"role": "admin"}
    assert everything.items[0].before is None
    by_actor = await audit.search_audit(store, actor="root", limit=1)
    assert [e.action for e in by_actor.items] == ["user.update"] and by_actor.more
    assert [e.action for e in (await audit.search_audit(store, text="ADMIN")).items] == [
        "user.update"
    ]
    window = await audit.search_audit(store, since=T0, until=T0 + timedelta(minutes=1))
    assert [e.action for e in window.items] == ["user.create"]
    assert (await audit.search_audit(store, target="crl_abc")).items[0].actor == "bob"


@pytest.mark.parametrize("text", ["%", "_", "' OR 1=1 --", "\\"])
async def test_audit_search_text_is_literal(store: Store, text: str) -> None:
    await audit.add_audit(store, "root", "user.create", "plain")
    await audit.add_audit(store, "root", "user.create", f"odd{text}name")
    found = await audit.search_audit(store, text=text)
    assert [e.target for e in found.items] == [f"odd{text}name"]


async def test_bad_audit_input_is_refused(store: Store) -> None:
    with pytest.raises(BadRequest):
        await audit.add_audit(store, "root", "x", after={"not": object()})
    with pytest.raises(BadRequest):
        await audit.add_audit(store, "", "x")
    with pytest.raises(BadRequest):
        await audit.search_audit(store, limit=100_000)
    with pytest.raises(BadRequest):
        await audit.search_audit(store, offset=-1)
    assert (await audit.search_audit(store)).items == []


async def test_backends_are_registered_listed_and_removed(store: Store) -> None:
    made = await backends.register_backend(
        store,
        "http://gpu1:11434/",
        options={"max_concurrency": 8, "vram_gb": 24},
        created_by="root",
    )
    assert (made.name, made.url, made.kind) == ("gpu1:11434", "http://gpu1:11434", "ollama")
    assert made.options == {"max_concurrency": 8, "vram_gb": 24.0}
    await backends.register_backend(store, "openai+http://vllm:8000", name="vllm")
    assert [b.name for b in await backends.list_backends(store)] == ["gpu1:11434", "vllm"]
    config = backends.backend_config((await backends.list_backends(store))[1])
    assert (config.kind, config.max_concurrency) == ("openai", 32)
    with pytest.raises(Conflict, match="vllm"):
        await backends.register_backend(store, "http://other:1", name="vllm")
    gone = await backends.deregister_backend(store, "vllm")
    assert gone.kind == "openai"
    with pytest.raises(NotFound):
        await backends.deregister_backend(store, "vllm")
    assert [b.name for b in await backends.list_backends(store)] == ["gpu1:11434"]


@pytest.mark.parametrize(
    ("url", "options"),
    [("ftp://x", {}), ("http://x:1", {"max_concurrency": -1}), ("http://x:1", {"bogus": 1})],
)
async def test_bad_backends_are_refused(store: Store, url: str, options: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        await backends.register_backend(store, url, options=options)
    assert await backends.list_backends(store) == []


async def test_budgets_come_from_the_user_then_the_group(store: Store) -> None:
    await users.create_group(store, "student", token_budget=1000, budget_period="week")
    await users.create_user(store, "sam", group="student")
    await users.create_user(store, "loner")
    assert await quota.effective_budget(store, "sam") == quota.Budget(1000, "week", "group")
    assert await quota.effective_budget(store, "loner") == quota.Budget(None, "month", "none")
    await quota.set_user_budget(store, "sam", 5000, note="thesis")
    assert await quota.effective_budget(store, "sam") == quota.Budget(5000, "week", "user")
    await quota.set_user_budget(store, "sam", None)  # unlimited, not "the group's"
    assert (await quota.effective_budget(store, "sam")).tokens is None
    await quota.clear_user_budget(store, "sam")
    await quota.set_group_budget(store, "student", 2000, "day")
    assert await quota.effective_budget(store, "sam") == quota.Budget(2000, "day", "group")
    with pytest.raises(BadRequest):
        await quota.set_user_budget(store, "sam", -1)
    with pytest.raises(BadRequest):
        await quota.set_group_budget(store, "student", 10, "fortnight")
    with pytest.raises(BadRequest):
        await users.create_group(store, "bad", token_budget=-5)


def test_periods_are_utc_calendar_days_weeks_and_months() -> None:
    at = datetime(2026, 12, 17, 15, tzinfo=UTC)  # a Thursday
    assert quota.period_bounds("day", at) == (
        datetime(2026, 12, 17, tzinfo=UTC),
        datetime(2026, 12, 18, tzinfo=UTC),
    )
    assert quota.period_bounds("week", at)[0] == datetime(2026, 12, 14, tzinfo=UTC)
    assert quota.period_bounds("month", at) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


async def test_period_charges_add_up_per_user_and_period(store: Store) -> None:
    sam = await users.create_user(store, "sam")
    start, end = quota.period_bounds("month", T0)
    assert await quota.charge_period(store, sam.id, start, end, 100) == 100
    assert await quota.charge_period(store, sam.id, start, end, 50) == 150
    assert await quota.period_used(store, sam.id, start) == 150
    assert await quota.period_used(store, sam.id, end) == 0
    with pytest.raises(BadRequest):
        await quota.charge_period(store, sam.id, start, end, -1)


async def test_quota_requests_are_filed_and_decided_once(store: Store) -> None:
    await users.create_group(store, "student", token_budget=1000)
    await users.create_user(store, "sam", group="student")
    await users.create_user(store, "root", role="admin")
    asked = await quota.file_quota_request(store, "sam", 500, "deadline")
    assert asked.status == "pending"
    other = await quota.file_quota_request(store, "sam", 100)
    pending = await quota.list_quota_requests(store, status="pending")
    assert [r.id for r in pending.items] == [asked.id, other.id]
    approved = await quota.decide_quota_request(store, asked.id, approve=True, decided_by="root")
    assert (approved.status, approved.decided_by) == ("approved", "root")
    assert approved.decided_at is not None
    assert await quota.effective_budget(store, "sam") == quota.Budget(1500, "month", "user")
    with pytest.raises(Conflict):
        await quota.decide_quota_request(store, asked.id, approve=False, decided_by="root")
    denied = await quota.decide_quota_request(store, other.id, approve=False, decided_by="root")
    assert denied.status == "denied"
    assert (await quota.effective_budget(store, "sam")).tokens == 1500
    events = await audit.search_audit(store, actor="root")
    assert [e.action for e in events.items] == ["quota_request.denied", "quota_request.approved"]
    assert events.items[1].after == {"token_budget": 1500, "source": "user"}
    assert [r.id for r in (await quota.list_quota_requests(store, user="sam")).items] == [
        asked.id,
        other.id,
    ]


async def test_bad_quota_requests_are_refused_and_leave_nothing(store: Store) -> None:
    await users.create_user(store, "sam")
    for amount in (0, -10):
        with pytest.raises(BadRequest):
            await quota.file_quota_request(store, "sam", amount)
    with pytest.raises(NotFound):
        await quota.file_quota_request(store, "nobody", 10)
    asked = await quota.file_quota_request(store, "sam", 10)
    with pytest.raises(NotFound):  # the decider must exist: nothing changes
        await quota.decide_quota_request(store, asked.id, approve=True, decided_by="ghost")
    assert (await quota.list_quota_requests(store)).items[0].status == "pending"
    with pytest.raises(NotFound):
        await quota.decide_quota_request(store, 999_999, approve=True, decided_by="sam")
    with pytest.raises(BadRequest):
        await quota.list_quota_requests(store, status="maybe")
    assert (await audit.search_audit(store)).items == []


async def test_backend_changes_commit_with_their_audit_rows(store: Store) -> None:
    await backends.register_backend(
        store, "http://gpu1:11434", name="gpu1", options={"weight": 2}, actor="root"
    )
    before, after = await backends.update_backend(
        store, "gpu1", {"max_concurrency": 6, "tags": ["eu"], "weight": None}, actor="root"
    )
    assert before.options == {"weight": 2.0}
    assert after.options == {"max_concurrency": 6, "tags": ["eu"]}
    with pytest.raises(BadRequest, match="max_concurrency"):
        await backends.update_backend(store, "gpu1", {"max_concurrency": 0}, actor="root")
    with pytest.raises(BadRequest, match="url cannot be changed"):
        await backends.update_backend(store, "gpu1", {"url": "http://x:1"}, actor="root")
    with pytest.raises(NotFound):
        await backends.update_backend(store, "nope", {"weight": 1}, actor="root")
    # A refused audit row (a bad actor name) takes the change down with it.
    with pytest.raises(BadRequest):
        await backends.update_backend(store, "gpu1", {"weight": 3}, actor="")
    with pytest.raises(BadRequest):
        await backends.register_backend(store, "http://gpu2:11434", name="gpu2", actor="")
    assert [b.name for b in await backends.list_backends(store)] == ["gpu1"]
    assert (await backends.list_backends(store))[0].options == after.options
    await backends.deregister_backend(store, "gpu1", actor="root")
    events = (await audit.search_audit(store, target="gpu1")).items
    assert [e.action for e in reversed(events)] == [
        "backend.register",
        "backend.update",
        "backend.deregister",
    ]
    assert events[1].before == {"name": "gpu1", "url": "http://gpu1:11434", "kind": "ollama",
                                "weight": 2.0}  # fmt: skip
    assert events[1].after is not None and events[1].after["tags"] == ["eu"]
    assert events[0].before is not None and events[0].before["max_concurrency"] == 6
