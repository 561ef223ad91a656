"""``corral users``, ``corral groups``, ``corral keys``: the operator's bootstrap.

Each command migrates the store to head first, so one command works on a fresh
machine. A new key goes to stdout alone (``KEY=$(corral keys create ...)`` captures
just the key); notes go to stderr. A refused change is one ``error: ...`` line and
exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from corral.adapters.store import keys as key_ops
from corral.adapters.store import quota as quota_ops
from corral.adapters.store import users as user_ops
from corral.adapters.store.db import MAX_PAGE, Store
from corral.adapters.store.records import ApiKey, Group, NewKey, Page, User
from corral.adapters.store.schema import SCOPES
from corral.config.base import default_data_dir
from corral.core.errors import BadRequest, CorralError

__all__ = ["Where", "groups_app", "keys_app", "quota_app", "users_app"]

T = TypeVar("T")
USER_COLUMNS = ("name", "role", "group", "disabled", "max_concurrent", "has_password", "created_at")
MAX_EXPIRY_DAYS = 36_500


def _typer(name: str, text: str) -> typer.Typer:
    return typer.Typer(
        name=name,
        help=text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


users_app = _typer("users", "People and services that may use the gateway.")
groups_app = _typer("groups", "Groups of users and their scheduling weights.")
keys_app = _typer("keys", "API keys: created, listed, revoked.")
quota_app = _typer("quota", "Token budgets per period: a group's default, a user's own.")


@dataclass(frozen=True, slots=True)
class Where:
    """The database and the server secret the commands work on."""

    database_url: str
    secret_file: Path

    @classmethod
    def resolve(
        cls, database_url: str | None, data_dir: Path | None, secret_file: Path | None
    ) -> Where:
        """The settings' defaults: both live in the data directory unless named."""
        home = data_dir or default_data_dir()
        return cls(
            database_url or f"sqlite+aiosqlite:///{home / 'corral.db'}",
            secret_file or home / "secret.key",
        )


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="CORRAL_DATABASE_URL",
        help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB "
        "(default: corral.db in the data directory).",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="CORRAL_DATA_DIR",
        help="Where the default database and secret live (default: $XDG_DATA_HOME/corral).",
        show_default=False,
        file_okay=False,
    ),
]
SecretFile = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        envvar="CORRAL_SECRET_FILE",
        help="The server secret keys are digested with; made if missing "
        "(default: secret.key in the data directory).",
        show_default=False,
        dir_okay=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _quiet_migrations() -> Iterator[None]:
    # Alembic logs each step at INFO; a command's stderr is for its own one line.
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run(where: Where, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, migrate it, do ``work``; any refusal becomes one line and exit 1."""

    async def session() -> T:
        store = await Store.open(where.database_url)
        try:
            with _quiet_migrations():
                await store.upgrade()
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(session())
    except ArgumentError:
        # Not echoed: a mistyped URL may still hold a password.
        _fail("--database-url: expected sqlite+aiosqlite:///PATH or postgresql+asyncpg://...", 2)
    except CorralError as exc:
        _fail(exc.message)
    except (SQLAlchemyError, OSError, ValueError) as exc:
        # Driver errors run to several lines (the SQL, a link); the first says what.
        _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def _secret(where: Where) -> bytes:
    try:
        return key_ops.load_or_create_secret(where.secret_file)
    except (OSError, ValueError) as exc:
        _fail(f"server secret {where.secret_file}: {exc}")


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return str(_time(value))
    if isinstance(value, float):
        return f"{value:g}"
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return _time(value)
    return list(value) if isinstance(value, tuple) else value


Column = str | tuple[str, Callable[[Any], object]]


def _print(items: Sequence[object], columns: Sequence[Column], json_out: bool) -> None:
    """A table (or, with ``json_out``, a JSON array) of the named attributes of ``items``."""
    named = [(c, lambda i, c=c: getattr(i, c)) if isinstance(c, str) else c for c in columns]
    rows = [{name: get(item) for name, get in named} for item in items]
    if json_out:
        out = [{k: _plain(v) for k, v in row.items()} for row in rows]
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    cells = [[name.upper() for name, _ in named]] + [[_cell(v) for v in r.values()] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(named))]
    for row in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


async def _every(fetch: Callable[[int], Awaitable[Page[T]]]) -> list[T]:
    """Every item of a paged listing, a page at a time."""
    found: list[T] = []
    while True:
        page = await fetch(len(found))
        found.extend(page.items)
        if not page.more:
            return found


def _show_key(new: NewKey) -> None:
    typer.echo(
        f"key {new.key.prefix} for {new.key.user_name!r} ({', '.join(new.key.scopes)}); "
        "it is shown once, now, and will not be shown again",
        err=True,
    )
    typer.echo(new.plaintext)


def _expiry(days: int | None) -> datetime | None:
    if days is None:
        return None
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise BadRequest(f"--expires-in-days must be 1 to {MAX_EXPIRY_DAYS}, not {days}")
    return datetime.now(UTC) + timedelta(days=days)


def _limit(value: int | None, option: str) -> int | None:
    if value is not None and value < 0:
        _fail(f"{option} must be 0 or more, not {value}", 2)
    return value


def _read_password() -> str:
    # One line from stdin, without its line ending; spaces inside it are kept.
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


@users_app.command("create")
def create_user(
    name: Annotated[str, typer.Argument(help="The user's name (1 to 128 characters).")],
    admin: Annotated[bool, typer.Option("--admin", help="Role admin instead of user.")] = False,
    group: Annotated[
        str | None, typer.Option("--group", help="An existing group (see `corral groups`).")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read a dashboard password from stdin's first line."),
    ] = False,
    no_key: Annotated[
        bool, typer.Option("--no-key", help="Make no key (by default the first is printed).")
    ] = False,
    max_concurrent: Annotated[
        int | None,
        typer.Option("--max-concurrent", help="Requests the user may have running at once."),
    ] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    secret_file: SecretFile = None,
) -> None:
    """Add a user and print their first key, once (an admin's has every scope)."""
    where = Where.resolve(database_url, data_dir, secret_file)
    role = "admin" if admin else "user"
    most = _limit(max_concurrent, "--max-concurrent")
    password = _read_password() if password_stdin else None
    secret = None if no_key else _secret(where)

    async def work(store: Store) -> tuple[User, NewKey | None]:
        if secret is None:
            return await user_ops.create_user(
                store, name, role=role, group=group, password=password, max_concurrent=most
            ), None
        hashed = None if password is None else await user_ops.hash_password(password)
        return await key_ops.create_user_with_key(
            store,
            name,
            secret,
            role=role,
            group=group,
            password_hash=hashed,
            max_concurrent=most,
            scopes=SCOPES if admin else ("inference",),  # an admin's first key may do everything
        )

    user, new = _run(where, work)
    typer.echo(f"created {role} {user.name!r}", err=new is not None)
    if new is not None:
        _show_key(new)


@users_app.command("ls")
def list_users(
    json_out: Json = False, database_url: DatabaseUrl = None, data_dir: DataDir = None
) -> None:
    """List users: name, role, group, whether disabled or with a password."""
    found = _run(
        Where.resolve(database_url, data_dir, None),
        lambda s: _every(lambda at: user_ops.list_users(s, limit=MAX_PAGE, offset=at)),
    )
    _print(found, USER_COLUMNS, json_out)


@groups_app.command("create")
def create_group(
    name: Annotated[str, typer.Argument(help="The group's name, e.g. faculty.")],
    weight: Annotated[
        float, typer.Option("--weight", help="Scheduling weight, 0 or more (2 = twice the share).")
    ] = 1.0,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Add a group with a scheduling weight."""
    where = Where.resolve(database_url, data_dir, None)
    made = _run(where, lambda store: user_ops.create_group(store, name, weight=weight))
    typer.echo(f"created group {made.name!r} with weight {made.weight:g}")


@groups_app.command("ls")
def list_groups(
    json_out: Json = False, database_url: DatabaseUrl = None, data_dir: DataDir = None
) -> None:
    """List groups with their weights and default token budgets."""
    found: list[Group] = _run(Where.resolve(database_url, data_dir, None), user_ops.list_groups)
    _print(found, ("name", "weight", "token_budget", "budget_period"), json_out)


@keys_app.command("create")
def create_key(
    user: Annotated[str, typer.Option("--user", help="The key's owner (an existing user).")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help=f"One of {', '.join(SCOPES)}; repeat for more (default: inference).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="A model the key may use; repeat for more (default: all)."),
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", help="Expire after this many days.")
    ] = None,
    label: Annotated[str, typer.Option("--name", help="A label to tell keys apart.")] = "",
    rpm: Annotated[
        int | None, typer.Option("--rpm", help="Requests per minute (default: no limit).")
    ] = None,
    tpm: Annotated[
        int | None, typer.Option("--tpm", help="Tokens per minute (default: no limit).")
    ] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    secret_file: SecretFile = None,
) -> None:
    """Make a key for a user and print it, once."""
    where = Where.resolve(database_url, data_dir, secret_file)
    scopes = scope or ["inference"]
    rpm, tpm = _limit(rpm, "--rpm"), _limit(tpm, "--tpm")

    async def work(store: Store) -> NewKey:
        expires_at = _expiry(expires_in_days)
        owner = await user_ops.get_user(store, user)
        if "admin" in scopes and owner.role != "admin":
            raise BadRequest(f"the admin scope needs an admin; {owner.name!r} is a user")
        return await key_ops.create_key(
            store,
            user,
            _secret(where),
            name=label,
            scopes=scopes,
            allowed_models=model or None,
            expires_at=expires_at,
            rpm_limit=rpm,
            tpm_limit=tpm,
        )

    _show_key(_run(where, work))


async def _keys_of(store: Store, owner: str | None) -> list[ApiKey]:
    if owner is not None:
        return await key_ops.list_keys(store, owner)
    return await _every(lambda at: key_ops.list_all_keys(store, limit=MAX_PAGE, offset=at))


def _state(key: ApiKey, now: datetime) -> str:
    if key.revoked:
        return "revoked"
    return "active" if key.usable(now) else "expired"


@keys_app.command("ls")
def list_keys(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    json_out: Json = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """List keys by prefix (never a key's secret or digest)."""
    found = _run(Where.resolve(database_url, data_dir, None), lambda s: _keys_of(s, user))
    now = datetime.now(UTC)
    columns: list[Column] = ["prefix", ("user", lambda k: k.user_name), "name", "scopes"]
    columns += ["allowed_models", "expires_at", "revoked", ("state", lambda k: _state(k, now))]
    _print(found, [*columns, "created_at"], json_out)


@keys_app.command("revoke")
def revoke_key(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (the whole key works too).")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke a key; revoking it again changes nothing."""
    wanted = key_ops.parse_key(prefix) or prefix
    done = _run(
        Where.resolve(database_url, data_dir, None), lambda s: key_ops.revoke_key(s, wanted)
    )
    typer.echo(f"revoked key {done.prefix} of {done.user_name!r}")


@quota_app.callback()
def _quota() -> None:
    """Token budgets per period: a group's default, a user's own."""  # keeps `quota set` a group


@quota_app.command("set")
def set_quota(
    user: Annotated[
        str | None, typer.Option("--user", help="Give this user their own budget.")
    ] = None,
    group: Annotated[
        str | None, typer.Option("--group", help="Set this group's default budget.")
    ] = None,
    tokens: Annotated[
        int | None, typer.Option("--tokens", help="Tokens per period (0 stops all use).")
    ] = None,
    unlimited: Annotated[
        bool, typer.Option("--unlimited", help="No budget (instead of --tokens).")
    ] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="Drop the user's own budget: the group's applies.")
    ] = False,
    period: Annotated[
        str, typer.Option("--period", help="day, week or month (a group's; users follow it).")
    ] = "month",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Set a token budget per period for a user or a group."""
    if (user is None) == (group is None):
        _fail("name exactly one of --user and --group", 2)
    if sum((tokens is not None, unlimited, clear)) != 1:
        _fail("give exactly one of --tokens N, --unlimited and --clear", 2)
    if clear and user is None:
        _fail("--clear is for a user's own budget", 2)
    amount = _limit(tokens, "--tokens")
    where = Where.resolve(database_url, data_dir, None)
    if user is not None:
        if clear:
            _run(where, lambda s: quota_ops.clear_user_budget(s, user))
            typer.echo(f"{user!r} follows their group's budget again")
            return
        _run(where, lambda s: quota_ops.set_user_budget(s, user, amount))
        target = f"user {user!r}"
    else:
        assert group is not None
        _run(where, lambda s: quota_ops.set_group_budget(s, group, amount, period))
        target = f"group {group!r}"
    shown = "unlimited" if amount is None else f"{amount:,} tokens"
    typer.echo(f"budget of {target}: {shown}")
