"""Users, groups, passwords and API keys on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from corral.adapters.store import Store, keys, users
from corral.adapters.store.schema import ApiKeyRow, UserRow
from corral.core.errors import BadRequest, Conflict, NotFound
from tests.store.conftest import FAST_HASHER, SECRET

SQLISH = ["robert'); DROP TABLE users;--", "x' OR '1'='1", 'a"b\\c', "50%_off", "üñí©ødé"]


async def test_a_user_is_created_and_read_back(store: Store) -> None:
    await users.create_group(store, "staff", weight=2.5)
    made = await users.create_user(store, "alice", role="admin", group="staff")
    got = await users.get_user(store, "alice")
    assert got == made
    assert (got.role, got.group, got.disabled, got.has_password) == ("admin", "staff", False, False)
    assert got.created_at.tzinfo is not None


async def test_a_duplicate_username_is_a_conflict(store: Store) -> None:
    await users.create_user(store, "alice")
    with pytest.raises(Conflict, match="alice") as caught:
        await users.create_user(store, "alice", role="admin")
    assert caught.value.status == 409
    assert (await users.get_user(store, "alice")).role == "user"


@pytest.mark.parametrize("name", SQLISH)
async def test_sql_ish_names_are_stored_literally(store: Store, name: str) -> None:
    await users.create_user(store, name)
    await users.create_group(store, name)
    assert (await users.get_user(store, name)).name == name
    assert (await users.get_group(store, name)).name == name
    assert [u.name for u in (await users.list_users(store)).items] == [name]


@pytest.mark.parametrize("name", ["", " alice", "alice ", "a\nb", "x" * 129])
async def test_bad_names_are_refused(store: Store, name: str) -> None:
    with pytest.raises(BadRequest):
        await users.create_user(store, name)


async def test_an_unknown_role_or_group_is_refused(store: Store) -> None:
    with pytest.raises(BadRequest, match="role"):
        await users.create_user(store, "bob", role="root")
    with pytest.raises(NotFound, match="group"):
        await users.create_user(store, "bob", group="nope")
    with pytest.raises(NotFound):
        await users.get_user(store, "bob")


async def test_users_are_listed_a_page_at_a_time(store: Store) -> None:
    for i in range(5):
        await users.create_user(store, f"user{i}")
    first = await users.list_users(store, limit=2)
    assert [u.name for u in first.items] == ["user0", "user1"] and first.more
    last = await users.list_users(store, limit=2, offset=4)
    assert [u.name for u in last.items] == ["user4"] and not last.more
    assert await users.count_users(store) == 5


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (1001, 0), (-1, 0), (10, -1)])
async def test_huge_or_negative_pages_are_refused(store: Store, limit: int, offset: int) -> None:
    with pytest.raises(BadRequest) as caught:
        await users.list_users(store, limit=limit, offset=offset)
    assert caught.value.status == 400


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("-inf")])
async def test_a_negative_group_weight_is_refused(store: Store, weight: float) -> None:
    with pytest.raises(BadRequest, match="weight"):
        await users.create_group(store, "students", weight=weight)
    assert await users.list_groups(store) == []


async def test_groups_have_unique_names_and_a_weight(store: Store) -> None:
    await users.create_group(store, "faculty", weight=3)
    await users.create_group(store, "student", weight=0)
    with pytest.raises(Conflict):
        await users.create_group(store, "faculty")
    assert [(g.name, g.weight) for g in await users.list_groups(store)] == [
        ("faculty", 3.0),
        ("student", 0.0),
    ]


async def test_a_user_is_updated(store: Store) -> None:
    await users.create_group(store, "staff")
    await users.create_user(store, "carol", group="staff", max_concurrent=2)
    changed = await users.update_user(store, "carol", role="admin", disabled=True)
    assert (changed.role, changed.disabled, changed.group, changed.max_concurrent) == (
        "admin",
        True,
        "staff",
        2,
    )
    cleared = await users.update_user(store, "carol", group=None, max_concurrent=None)
    assert (cleared.group, cleared.max_concurrent) == (None, None)
    with pytest.raises(BadRequest):
        await users.update_user(store, "carol", max_concurrent=-1)


async def test_argon2_verifies_the_right_password_only(store: Store) -> None:
    await users.create_user(store, "dave", password="correct horse", hasher=FAST_HASHER)
    assert (
        await users.verify_password(store, "dave", "correct horse", hasher=FAST_HASHER)
    ) is not None
    assert await users.verify_password(store, "dave", "wrong horse", hasher=FAST_HASHER) is None
    assert await users.verify_password(store, "nobody", "correct horse", hasher=FAST_HASHER) is None
    async with store.read() as session:
        stored = await session.scalar(select(UserRow.password_hash).where(UserRow.name == "dave"))
    assert stored is not None and stored.startswith("$argon2id$") and "horse" not in stored


async def test_a_new_password_replaces_the_old(store: Store) -> None:
    await users.create_user(store, "erin")
    assert await users.verify_password(store, "erin", "", hasher=FAST_HASHER) is None
    await users.set_password(store, "erin", "first", hasher=FAST_HASHER)
    await users.set_password(store, "erin", "second", hasher=FAST_HASHER)
    assert await users.verify_password(store, "erin", "first", hasher=FAST_HASHER) is None
    assert await users.verify_password(store, "erin", "second", hasher=FAST_HASHER) is not None
    with pytest.raises(BadRequest):
        await users.set_password(store, "erin", "", hasher=FAST_HASHER)


async def test_default_argon2_parameters_verify(store: Store) -> None:
    await users.create_user(store, "frank", password="s3cret")
    assert (await users.verify_password(store, "frank", "s3cret")) is not None


async def test_a_key_is_shown_once_and_found_by_its_digest(store: Store) -> None:
    await users.create_user(store, "alice")
    new = await keys.create_key(
        store,
        "alice",
        SECRET,
        name="laptop",
        scopes=["inference", "models"],
        allowed_models=["qwen2.5:7b"],
        rpm_limit=60,
    )
    assert keys.parse_key(new.plaintext) == new.key.prefix
    found = await keys.find_key(store, SECRET, new.plaintext)
    assert found == new.key
    assert found is not None and found.user_name == "alice"
    assert found.scopes == ("inference", "models") and found.allowed_models == ("qwen2.5:7b",)
    digest = keys.key_digest(SECRET, new.plaintext)
    assert await keys.find_key_by_digest(store, digest) == new.key
    # The same key under another server secret is not a key at all.
    assert await keys.find_key(store, b"another-secret-of-thirty-two-byt", new.plaintext) is None


async def test_key_digests_never_store_the_plaintext(store: Store) -> None:
    await users.create_user(store, "alice")
    new = await keys.create_key(store, "alice", SECRET)
    secret_part = new.plaintext.rsplit("_", 1)[1]
    async with store.read() as session:
        row = (await session.execute(select(ApiKeyRow))).scalars().one()
        values = [str(getattr(row, c.key)) for c in ApiKeyRow.__table__.columns]
    assert not any(secret_part in value or new.plaintext in value for value in values)
    assert row.digest == keys.key_digest(SECRET, new.plaintext) != new.plaintext


@pytest.mark.parametrize(
    "text",
    [
        "",
        "crl_",
        "Bearer x",
        "crl_ABCDEFGH_" + "a" * 40,
        "crl_abcdefgh_" + "a" * 39,
        "crl_abcdefgh_" + "a" * 40 + "'; --",
        "sk-" + "a" * 48,
    ],
)
async def test_badly_formed_keys_are_not_found(store: Store, text: str) -> None:
    assert keys.parse_key(text) is None
    assert await keys.find_key(store, SECRET, text) is None


async def test_bad_key_options_are_refused(store: Store) -> None:
    await users.create_user(store, "alice")
    for options in (
        {"scopes": ["root"]},
        {"scopes": []},
        {"rpm_limit": -1},
        {"tpm_limit": -5},
        {"expires_at": datetime(2030, 1, 1)},  # naive
        {"allowed_models": ["ok", ""]},
    ):
        with pytest.raises(BadRequest):
            await keys.create_key(store, "alice", SECRET, **options)
    assert await keys.list_keys(store, "alice") == []
    with pytest.raises(NotFound):
        await keys.create_key(store, "nobody", SECRET)


async def test_keys_are_listed_revoked_and_expire(store: Store) -> None:
    await users.create_user(store, "alice")
    await users.create_user(store, "bob")
    now = datetime.now(UTC)
    live = await keys.create_key(store, "alice", SECRET)
    old = await keys.create_key(store, "alice", SECRET, expires_at=now - timedelta(seconds=1))
    bobs = await keys.create_key(store, "bob", SECRET)
    assert [k.prefix for k in await keys.list_keys(store, "alice")] == [
        live.key.prefix,
        old.key.prefix,
    ]
    active = await keys.active_keys(store, now)
    assert {k.prefix for k in active.values()} == {live.key.prefix, bobs.key.prefix}
    with pytest.raises(NotFound):  # not alice's key
        await keys.revoke_key(store, bobs.key.prefix, owner="alice")
    revoked = await keys.revoke_key(store, live.key.prefix, owner="alice")
    assert revoked.revoked and not revoked.usable(now)
    assert (await keys.revoke_key(store, live.key.prefix)).revoked  # again: no error
    assert set(await keys.active_keys(store, now)) == {keys.key_digest(SECRET, bobs.plaintext)}
    with pytest.raises(NotFound):
        await keys.revoke_key(store, "zzzzzzzz")


async def test_a_user_and_key_are_made_together(store: Store) -> None:
    user, new = await keys.create_user_with_key(
        store, "root", SECRET, role="admin", scopes=["admin"]
    )
    assert user.role == "admin" and new.key.user_name == "root"
    assert new.key.scopes == ("admin",)


async def test_a_failed_key_insert_leaves_no_user_behind(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await users.create_user(store, "alice")
    taken = await keys.create_key(store, "alice", SECRET)
    # The next key draws a prefix already stored: the key insert fails in the database.
    monkeypatch.setattr(keys, "new_key_text", lambda: (taken.key.prefix, taken.plaintext))
    with pytest.raises(Conflict):
        await keys.create_user_with_key(store, "mallory", SECRET)
    with pytest.raises(NotFound):
        await users.get_user(store, "mallory")
    assert [u.name for u in (await users.list_users(store)).items] == ["alice"]


async def test_a_duplicate_user_in_a_user_and_key_call_makes_no_key(store: Store) -> None:
    await users.create_user(store, "alice")
    with pytest.raises(Conflict, match="alice"):
        await keys.create_user_with_key(store, "alice", SECRET)
    assert await keys.list_keys(store, "alice") == []


def test_the_server_secret_is_made_once_and_kept_private(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "dir" / "secret.key"
    first = keys.load_or_create_secret(path)
    assert len(first) >= 32 and keys.load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("abcd\n")
    with pytest.raises(ValueError, match="32 bytes"):
        keys.load_or_create_secret(path)
    with pytest.raises(ValueError):
        keys.key_digest(b"short", "crl_x")
