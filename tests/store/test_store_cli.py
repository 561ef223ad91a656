"""``corral db upgrade`` against a temporary SQLite file and the real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.adapters.store import Store
from corral.adapters.store.cli import app, default_database_url
from corral.adapters.store.db import head_revision


def test_db_upgrade_migrates_a_new_sqlite_file_and_says_where(tmp_path: Path) -> None:
    where = tmp_path / "state" / "corral.db"
    url = f"sqlite+aiosqlite:///{where}"
    runner = CliRunner()
    first = runner.invoke(app, ["upgrade", "--database-url", url])
    assert first.exit_code == 0, first.output
    assert f"is at revision {head_revision()}" in first.output
    assert where.exists()
    again = runner.invoke(app, ["upgrade"], env={"CORRAL_DATABASE_URL": url})
    assert again.exit_code == 0 and f"is at revision {head_revision()}" in again.output

    async def check() -> bool:
        store = await Store.open(url)
        try:
            return await store.migrated()
        finally:
            await store.close()

    assert asyncio.run(check())


@pytest.mark.parametrize(
    ("url", "code"),
    [("not a url", 2), ("mysql+aiomysql://root@localhost/x", 1)],
)
def test_db_upgrade_reports_bad_urls(url: str, code: int) -> None:
    result = CliRunner().invoke(app, ["upgrade", "--database-url", url])
    assert result.exit_code == code
    assert "corral db upgrade" in result.output


def test_the_default_database_lives_in_the_xdg_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_database_url() == f"sqlite+aiosqlite:///{tmp_path / 'corral' / 'corral.db'}"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_database_url().endswith("/.local/share/corral/corral.db")
