"""``corral keys create --rpm/--tpm``, ``users create --max-concurrent``, ``quota set``."""

from __future__ import annotations

import pytest

from corral.adapters.store import keys, quota, users
from corral.adapters.store.admin_cli import groups_app, keys_app, quota_app, users_app
from tests.store.test_store_admin_cli import Cli, _one_error_line, cli  # noqa: F401


def test_limits_are_stored_on_the_key_and_the_user(cli: Cli) -> None:  # noqa: F811
    made = cli(users_app, "create", "carol", "--max-concurrent", "3")
    assert made.exit_code == 0, made.output
    assert cli.on_store(lambda s: users.get_user(s, "carol")).max_concurrent == 3
    key = cli(keys_app, "create", "--user", "carol", "--rpm", "60", "--tpm", "100000")
    assert key.exit_code == 0, key.output
    digest = keys.key_digest(cli.secret(), key.stdout.strip())
    found = cli.on_store(lambda s: keys.find_key_by_digest(s, digest))
    assert found is not None and (found.rpm_limit, found.tpm_limit) == (60, 100_000)


@pytest.mark.parametrize(
    "args",
    [
        (keys_app, "create", "--user", "carol", "--rpm", "-1"),
        (keys_app, "create", "--user", "carol", "--tpm", "-5"),
        (users_app, "create", "dan", "--max-concurrent", "-2"),
        (quota_app, "set", "--user", "carol", "--tokens", "-10"),
    ],
)
def test_a_negative_limit_is_one_error_line_naming_the_option(
    cli: Cli,  # noqa: F811
    args: tuple[object, ...],
) -> None:
    app, *rest = args
    line = _one_error_line(cli(app, *rest), code=2)  # type: ignore[arg-type]
    assert "must be 0 or more" in line and rest[-2] in line


def test_quota_set_gives_groups_and_users_budgets(cli: Cli) -> None:  # noqa: F811
    assert cli(groups_app, "create", "student").exit_code == 0
    assert cli(users_app, "create", "eve", "--group", "student", "--no-key").exit_code == 0
    done = cli(quota_app, "set", "--group", "student", "--tokens", "1000", "--period", "week")
    assert done.exit_code == 0 and done.stdout == "budget of group 'student': 1,000 tokens\n"
    budget = cli.on_store(lambda s: quota.effective_budget(s, "eve"))
    assert (budget.tokens, budget.period, budget.source) == (1000, "week", "group")
    assert cli(quota_app, "set", "--user", "eve", "--unlimited").exit_code == 0
    assert cli.on_store(lambda s: quota.effective_budget(s, "eve")).tokens is None
    assert cli(quota_app, "set", "--user", "eve", "--clear").exit_code == 0
    assert cli.on_store(lambda s: quota.effective_budget(s, "eve")).tokens == 1000
    both = cli(quota_app, "set", "--user", "eve", "--tokens", "1", "--unlimited")
    assert both.exit_code == 2 and "exactly one" in both.stderr
    bad = cli(quota_app, "set", "--group", "student", "--tokens", "1", "--period", "year")
    assert _one_error_line(bad).startswith("error: budget period must be one of")
