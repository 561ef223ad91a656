"""``corral users``, ``groups`` and ``keys`` on a SQLite file and on a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import typer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner, Result

from corral.adapters.store import Store, keys, users
from corral.adapters.store.admin_cli import Where, groups_app, keys_app, users_app
from corral.adapters.store.schema import SCOPES
from tests.store.conftest import FAST_HASHER, PG_URL, _unreachable
from tests.store.test_store_identity import SQLISH

T = TypeVar("T")


class Cli:
    """The three command groups against one database and one secret file."""

    def __init__(self, url: str, secret_file: Path) -> None:
        self.url = url
        self.secret_file = secret_file
        self.env = {"CORRAL_DATABASE_URL": url, "CORRAL_SECRET_FILE": str(secret_file)}

    def __call__(self, app: typer.Typer, *args: str, stdin: str | None = None) -> Result:
        return CliRunner().invoke(app, list(args), env=self.env, input=stdin)

    def secret(self) -> bytes:
        return keys.load_or_create_secret(self.secret_file)

    def on_store(self, work: Callable[[Store], Awaitable[T]]) -> T:
        async def run() -> T:
            store = await Store.open(self.url)
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(run())


async def _database_ddl(statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    engine = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5})
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    """A fresh, unmigrated database per test: a SQLite file or a new PostgreSQL database."""
    secret_file = tmp_path / "secret.key"
    if request.param == "sqlite":
        yield Cli(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'corral.db'}", secret_file)
        return
    name = f"corral_cli_{secrets.token_hex(6)}"  # a fixed alphabet: safe as an identifier
    try:
        asyncio.run(_database_ddl(f"CREATE DATABASE {name}"))
    except (OSError, SQLAlchemyError) as exc:
        _unreachable(exc)
    try:
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        yield Cli(url, secret_file)
    finally:
        asyncio.run(_database_ddl(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _one_error_line(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_an_admin_made_on_a_fresh_database_gets_a_key_printed_once_that_verifies(
    cli: Cli,
) -> None:
    result = cli(users_app, "create", "--admin", "root")
    assert result.exit_code == 0, result.output
    key = result.stdout.removesuffix("\n")
    assert result.stdout == key + "\n" and keys.parse_key(key) is not None
    assert "will not be shown again" in result.stderr and key not in result.stderr

    found = cli.on_store(lambda s: keys.find_key(s, cli.secret(), key))
    assert found is not None
    assert (found.user_name, found.scopes, found.revoked) == ("root", SCOPES, False)
    assert cli.on_store(lambda s: users.get_user(s, "root")).role == "admin"


def test_keys_create_prints_only_the_key_and_stores_its_options(cli: Cli) -> None:
    assert cli(users_app, "create", "bob", "--no-key").stdout == "created user 'bob'\n"
    result = cli(
        keys_app,
        "create",
        "--user", "bob",
        "--scope", "inference",
        "--scope", "models",
        "--model", "llama3.2:1b",
        "--model", "qwen2.5:7b",
        "--expires-in-days", "7",
        "--name", "ci runner",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert result.stdout == key + "\n"

    found = cli.on_store(lambda s: keys.find_key_by_digest(s, keys.key_digest(cli.secret(), key)))
    assert found is not None and found.prefix == keys.parse_key(key)
    assert (found.user_name, found.name, found.scopes) == (
        "bob",
        "ci runner",
        ("inference", "models"),
    )
    assert found.allowed_models == ("llama3.2:1b", "qwen2.5:7b")
    assert found.expires_at is not None
    assert abs(found.expires_at - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=5)


def test_listings_show_prefixes_and_never_a_key_or_its_digest(cli: Cli) -> None:
    key = cli(users_app, "create", "--admin", "root").stdout.strip()
    digest = keys.key_digest(cli.secret(), key)
    prefix = str(keys.parse_key(key))
    secret_part = key.rsplit("_", 1)[1]
    table = cli(keys_app, "ls")
    as_json = cli(keys_app, "ls", "--user", "root", "--json")
    for shown in (table, as_json):
        assert shown.exit_code == 0, shown.output
        assert prefix in shown.stdout
        assert secret_part not in shown.output and digest not in shown.output
    (listed,) = json.loads(as_json.stdout)
    assert listed["prefix"] == prefix and listed["user"] == "root"
    assert listed["scopes"] == list(SCOPES) and listed["state"] == "active"
    assert not {"digest", "key", "secret"} & set(listed)

    people = json.loads(cli(users_app, "ls", "--json").stdout)
    assert [(p["name"], p["role"], p["has_password"]) for p in people] == [("root", "admin", False)]


def test_a_revoked_key_no_longer_resolves_as_active(cli: Cli) -> None:
    key = cli(users_app, "create", "alice").stdout.strip()
    digest = keys.key_digest(cli.secret(), key)
    assert digest in cli.on_store(lambda s: keys.active_keys(s, datetime.now(UTC)))

    result = cli(keys_app, "revoke", str(keys.parse_key(key)))
    assert result.exit_code == 0, result.output
    assert "revoked" in result.stdout
    assert digest not in cli.on_store(lambda s: keys.active_keys(s, datetime.now(UTC)))
    found = cli.on_store(lambda s: keys.find_key(s, cli.secret(), key))
    assert found is not None and found.revoked
    (listed,) = json.loads(cli(keys_app, "ls", "--json").stdout)
    assert (listed["revoked"], listed["state"]) == (True, "revoked")
    again = cli(keys_app, "revoke", key)  # the whole key names it too; a second revoke is a no-op
    assert again.exit_code == 0, again.output


def test_a_duplicate_user_is_one_error_line_and_exit_1(cli: Cli) -> None:
    assert cli(users_app, "create", "alice").exit_code == 0
    line = _one_error_line(cli(users_app, "create", "--admin", "alice"))
    assert line == "error: user 'alice' already exists"
    assert cli.on_store(lambda s: users.get_user(s, "alice")).role == "user"
    assert len(json.loads(cli(keys_app, "ls", "--json").stdout)) == 1  # no key for the loser


@pytest.mark.parametrize("name", SQLISH)
def test_sql_ish_names_are_stored_literally(cli: Cli, name: str) -> None:
    assert cli(groups_app, "create", name, "--weight", "2").exit_code == 0
    made = cli(users_app, "create", name, "--group", name, "--no-key")
    assert made.exit_code == 0, made.output
    assert cli(keys_app, "create", "--user", name).exit_code == 0
    (person,) = json.loads(cli(users_app, "ls", "--json").stdout)
    assert (person["name"], person["group"]) == (name, name)
    (group,) = json.loads(cli(groups_app, "ls", "--json").stdout)
    assert (group["name"], group["weight"]) == (name, 2.0)
    (key,) = json.loads(cli(keys_app, "ls", "--user", name, "--json").stdout)
    assert key["user"] == name


def test_a_bad_scope_is_refused_with_the_scopes_that_exist(cli: Cli) -> None:
    cli(users_app, "create", "bob", "--no-key")
    line = _one_error_line(cli(keys_app, "create", "--user", "bob", "--scope", "root"))
    assert "inference, admin, models" in line and "root" in line
    assert json.loads(cli(keys_app, "ls", "--json").stdout) == []


def test_the_admin_scope_is_only_for_admins(cli: Cli) -> None:
    cli(users_app, "create", "bob", "--no-key")
    line = _one_error_line(cli(keys_app, "create", "--user", "bob", "--scope", "admin"))
    assert "admin" in line and "'bob'" in line
    cli(users_app, "create", "root", "--admin", "--no-key")
    assert cli(keys_app, "create", "--user", "root", "--scope", "admin").exit_code == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((keys_app, "create", "--user", "nobody"), "no user 'nobody'"),
        ((users_app, "create", "eve", "--group", "nowhere"), "no group 'nowhere'"),
        ((groups_app, "create", "staff", "--weight", "-1"), "weight must be 0 or more"),
        ((keys_app, "create", "--user", "x", "--expires-in-days", "0"), "--expires-in-days"),
        ((keys_app, "revoke", "zzzzzzzz"), "no key 'zzzzzzzz'"),
        ((users_app, "create", " padded"), "surrounding spaces"),
    ],
)
def test_refusals_are_one_line_and_exit_1(
    cli: Cli, args: tuple[typer.Typer, ...], says: str
) -> None:
    app, *rest = args
    assert says in _one_error_line(cli(app, *map(str, rest)))


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    cli = Cli(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}", tmp_path / "secret.key")
    assert cli(keys_app, "create").exit_code == 2  # --user is required
    assert cli(groups_app, "create", "x", "--weight", "heavy").exit_code == 2
    bad_url = CliRunner().invoke(users_app, ["ls", "--database-url", "not a url"])
    assert "--database-url: expected" in _one_error_line(bad_url, 2)


def test_a_password_from_stdin_is_hashed_and_verifies(cli: Cli) -> None:
    made = cli(users_app, "create", "carol", "--password-stdin", stdin="cor rect horse\n")
    assert made.exit_code == 0, made.output
    assert keys.parse_key(made.stdout.strip()) is not None
    # Verifying reads the cost from the stored hash; the fast hasher only re-hashes.
    assert cli.on_store(
        lambda s: users.verify_password(s, "carol", "cor rect horse", hasher=FAST_HASHER)
    )
    (person,) = json.loads(cli(users_app, "ls", "--json").stdout)
    assert person["has_password"] is True
    assert "1 to 1024" in _one_error_line(
        cli(users_app, "create", "dave", "--password-stdin", "--no-key", stdin="\n")
    )


def test_the_database_and_secret_default_to_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = Where.resolve(None, tmp_path / "state", None)
    assert where == Where(f"sqlite+aiosqlite:///{tmp_path / 'state' / 'corral.db'}",
                          tmp_path / "state" / "secret.key")  # fmt: skip
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Where.resolve(None, None, None).secret_file == tmp_path / "xdg" / "corral" / "secret.key"

    result = CliRunner().invoke(
        users_app, ["create", "root", "--admin"], env={"CORRAL_DATA_DIR": str(tmp_path / "d")}
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "corral.db").exists()
    assert (tmp_path / "d" / "secret.key").stat().st_mode & 0o777 == 0o600
