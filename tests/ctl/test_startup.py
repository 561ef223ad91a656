"""A remote command starts without importing the simulator, the store or the benchmark:
``corral`` registers only the command group named on its command line."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ("corral.sim", "corral.adapters.store", "corral.fleetbench", "corral.agent", "sqlalchemy")


def imported(*args: str) -> tuple[str, set[str]]:
    ran = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "corral", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
            "COLUMNS": "200",
        },
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    modules = {
        line.split("|")[-1].strip()
        for line in ran.stderr.splitlines()
        if line.startswith("import time:")
    }
    return ran.stdout, modules


def test_a_remote_command_imports_only_its_own_group() -> None:
    out, modules = imported("status", "--help")
    assert "--watch" in out
    assert "corral.app.ctl.status" in modules
    assert not [m for m in modules if m.startswith(HEAVY)]


def test_help_without_a_command_still_lists_every_group() -> None:
    out, modules = imported("--help")
    for name in ("serve", "sim", "bench", "db", "users", "agent", "status", "backends", "models",
                 "workers", "queue", "config", "chat"):  # fmt: skip
        assert f" {name} " in out, name
    assert "corral.sim.cli" in modules
