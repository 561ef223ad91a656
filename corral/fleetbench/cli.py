"""``corral bench fleet``: the discrete-event fleet benchmark from the command line.

The main CLI mounts :data:`app` as its ``bench`` group.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(
    name="bench",
    help="Benchmarks that need no GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    """Benchmarks that need no GPU."""


@app.command()
def fleet(
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            "-s",
            help="multi-model, shared-prefix, tenants, flapping, code-burst, or a YAML path.",
        ),
    ] = "multi-model",
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="Routing policy to compare; repeat for more (default: every policy).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the scenario's).")] = None,
    requests: Annotated[
        int | None,
        typer.Option("--requests", "-n", help="Number of arrivals (default: the scenario's)."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Keep only arrivals in the first this many seconds.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per policy instead of a table.")
    ] = False,
) -> None:
    """Simulate a fleet in virtual time with the real scheduler; compare policies."""
    from rich.console import Console

    from corral.core.policies import POLICIES
    from corral.fleetbench.report import json_lines as to_json
    from corral.fleetbench.report import run_scenario, table
    from corral.fleetbench.scenario import load_scenario

    try:
        sc = load_scenario(scenario)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from None
    names = policy or sorted(POLICIES)
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        known = ", ".join(sorted(POLICIES))
        raise typer.BadParameter(f"unknown policy {unknown[0]!r} (known: {known})")
    report = run_scenario(sc, names, seed=seed, requests=requests, duration=duration)
    if as_json:
        for line in to_json(report):
            typer.echo(line)
        return
    console = Console()
    console.print(table(report))
    for check in report.checks:
        mark = "[green]met[/green]" if check.met else "[red]missed[/red]"
        console.print(f"  {mark}  {check.target}: {check.detail}")
    console.print(f"  ({report.wall_s:.1f}s of wall time)")
