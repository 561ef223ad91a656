"""``python -m corral.sim``: the ``corral sim`` command without the gateway's CLI."""

from __future__ import annotations

import typer

from corral.sim.cli import sim

if __name__ == "__main__":
    typer.run(sim)
