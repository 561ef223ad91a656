"""``corral db upgrade`` against a temporary SQLite file and the real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.adapters.store import Store, ledger
from corral.adapters.store.audit_search import search_everything
from corral.adapters.store.cli import app, default_database_url
from corral.adapters.store.db import head_revision
from corral.adapters.store.records import usage_entry
from corral.adapters.store.request_audit import ContentLine, request_audit_entry
from corral.core.usage import UsageRecord


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


def test_db_purge_deletes_request_audit_rows_past_the_given_age(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"
    now = datetime.now(UTC)

    def record(rid: str, age: timedelta) -> UsageRecord:
        started = (now - age).timestamp()
        return UsageRecord(rid, "/api/chat", "ollama", "m", "b", 200, started, 0.1)

    async def fill() -> None:
        store = await Store.open(url)
        try:
            await store.upgrade()
            rows = [record("old", timedelta(days=10)), record("new", timedelta(days=1))]
            await ledger.record_usage_batch(
                store,
                [usage_entry(r) for r in rows],
                [
                    request_audit_entry(r, ContentLine("full", prompt="{}", response="hi"))
                    for r in rows
                ],
            )
        finally:
            await store.close()

    async def left() -> list[str]:
        store = await Store.open(url)
        try:
            page = await search_everything(store)
            return [h.request.request_id for h in page.items if h.request is not None]
        finally:
            await store.close()

    asyncio.run(fill())
    result = CliRunner().invoke(app, ["purge", "--older-than-days", "7", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "deleted 1 request audit rows older than 7 days" in result.output
    assert asyncio.run(left()) == ["new"]
    bad = CliRunner().invoke(app, ["purge", "--older-than-days", "-1", "--database-url", url])
    assert bad.exit_code == 2 and "older-than-days" in bad.output
