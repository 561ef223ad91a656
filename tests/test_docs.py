"""Docs are checked: every CLI command and option appears in docs/cli.md (STYLE.md #11)."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer.main

from corral.app import cli
from corral.core.policies import POLICIES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def cli_options() -> list[tuple[str, str]]:
    cli._register_sim()
    groups = {g.name for g in cli.app.registered_groups}
    if "bench" not in groups:
        cli._register_bench()
    if "db" not in groups:
        cli._register_db()
    if "users" not in groups:
        cli._register_admin()
    if "chat" not in {c.name for c in cli.app.registered_commands}:
        cli._register_ctl()
    if "agent" not in {c.name for c in cli.app.registered_commands}:
        cli._register_agent()
    group = typer.main.get_command(cli.app)
    found: list[tuple[str, str]] = []
    # Typer bundles its own click, so look at the objects' shape, not their classes.
    todo = [(name, command) for name, command in group.commands.items()]  # type: ignore[attr-defined]
    while todo:
        name, command = todo.pop()
        found.append((name, ""))
        for sub, subcommand in getattr(command, "commands", {}).items():
            todo.append((f"{name} {sub}", subcommand))
        for param in command.params:
            found.extend((name, opt) for opt in getattr(param, "opts", ()) if opt.startswith("--"))
    return found


def test_the_cli_has_serve_and_sim() -> None:
    names = {name for name, _ in cli_options()}
    assert {"serve", "sim", "version", "bench", "bench fleet", "agent"} <= names


def test_every_cli_command_and_option_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    missing = [
        f"corral {name} {opt}".strip()
        for name, opt in cli_options()
        if f"corral {name}" not in text or (opt and f"`{opt}" not in text)
    ]
    assert not missing, f"undocumented in docs/cli.md: {missing}"


def test_readme_quick_start_commands_exist() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    assert "scripts/corral serve --demo" in readme
    assert "scripts/test" in readme
    assert (DOCS.parent / "scripts" / "test").exists()
    assert "scripts/test" in (DOCS.parent / ".ci" / "run").read_text()


def test_every_routing_policy_and_option_is_documented() -> None:
    text = (DOCS / "scheduling.md").read_text()
    missing = []
    for name, factory in POLICIES.items():
        if f"`{name}`" not in text:
            missing.append(name)
        params = inspect.signature(factory).parameters
        missing.extend(f"{name}.{p}" for p in params if f"`{p}`" not in text)
    assert not missing, f"undocumented in docs/scheduling.md: {missing}"


def test_every_control_plane_route_is_documented() -> None:
    """Each path of the OpenAPI spec appears in docs/admin-api.md with its method,
    and each operation has a summary and a description in the spec."""
    from corral.app.factory import create_app
    from corral.config import load_settings

    app = create_app(load_settings(None, environ={}, overrides={}))
    spec = app.app.openapi()  # type: ignore[attr-defined]
    text = (DOCS / "admin-api.md").read_text()
    missing = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if f"`{method.upper()} {path}`" not in text:
                missing.append(f"{method.upper()} {path}")
            if not op.get("summary") or not op.get("description"):
                missing.append(f"{method.upper()} {path}: summary/description in the spec")
    assert not missing, f"undocumented in docs/admin-api.md: {missing}"
