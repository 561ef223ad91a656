"""Run the ``corral`` CLI as a real process against a gateway in the test's event loop."""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import Process
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ran", "run_cli", "start_cli"]


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    home: Path | None = None,
    timeout: float = 60,
) -> Ran:
    """``python -m corral ARGS`` with no CORRAL_* from the outside and a config home of
    its own (so ~/.config/corral/config.toml of the machine never leaks in); its output
    is not a terminal, as in a script."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    if home is not None:
        clean["XDG_CONFIG_HOME"] = str(home)
    clean["COLUMNS"] = "200"  # tables as wide as they like: a cell is not wrapped mid-name
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "corral",
        *args,
        env={**clean, **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else b""), timeout
    )
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def start_cli(*args: str, home: Path, env: dict[str, str] | None = None) -> Process:
    """``python -m corral ARGS`` left running (for ``--watch``): its output piped."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    clean |= {"XDG_CONFIG_HOME": str(home), "COLUMNS": "200"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "corral",
        *args,
        env={**clean, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
