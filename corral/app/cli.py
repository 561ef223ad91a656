"""The ``corral`` command line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from corral import __version__

__all__ = ["app", "main", "register_commands"]

app = typer.Typer(
    name="corral",
    help="Corral: one endpoint in front of a herd of LLM servers (Ollama and OpenAI APIs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on \\[default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port \\[default: 8088].")] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            "-b",
            help="A backend URL; repeat for more. http://host:port is an Ollama server, "
            "openai+http://host:port an OpenAI-compatible one; name=URL names it.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML config file (env CORRAL_CONFIG).", dir_okay=False
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help="Routing policy: corral (default), least_conn, round_robin, weighted, p2c, "
            "latency, score."
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            help="Also start a small simulated Ollama fleet and route to it (no GPU needed)."
        ),
    ] = False,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error \\[default: info].")
    ] = None,
) -> None:
    """Run the gateway."""
    from corral.app.server import run

    overrides: dict[str, Any] = {}
    for key, value in (
        ("host", host),
        ("port", port),
        ("policy", policy),
        ("log_level", log_level),
    ):
        if value is not None:
            overrides[key] = value
    if backend:
        overrides["backends"] = list(backend)
    sys.exit(run(config, overrides, demo=demo))


@app.command()
def version() -> None:
    """Print Corral's version."""
    typer.echo(__version__)


def _register_sim() -> None:
    try:
        from corral.sim.cli import sim
    except ImportError:  # pragma: no cover - only while the simulator is absent
        return

    app.command(
        "sim",
        help="Run simulated Ollama nodes (for demos, tests and benchmarks).",
    )(sim)


def _register_bench() -> None:
    from corral.fleetbench.cli import app as bench

    app.add_typer(bench, name="bench")


def _register_db() -> None:
    from corral.adapters.store.cli import app as db

    app.add_typer(db, name="db")


def _register_admin() -> None:
    from corral.adapters.store.admin_cli import groups_app, keys_app, quota_app, users_app

    app.add_typer(users_app, name="users")
    app.add_typer(groups_app, name="groups")
    app.add_typer(keys_app, name="keys")
    app.add_typer(quota_app, name="quota")


def _register_ctl() -> None:
    from corral.app.ctl import backends, config, models, queue, workers
    from corral.app.ctl.status import status
    from corral.app.ctl.trying import chat, generate

    app.command("status")(status)
    app.add_typer(backends.app, name="backends")
    app.add_typer(models.app, name="models")
    app.add_typer(workers.app, name="workers")
    app.add_typer(queue.app, name="queue")
    app.add_typer(config.app, name="config")
    app.command("chat")(chat)
    app.command("generate")(generate)


def _register_agent() -> None:
    from corral.agent.cli import agent

    app.command("agent")(agent)


# The command groups by the name that runs them: a command run from the shell imports
# only its own group (the simulator, the store and the benchmark cost about a second
# of imports, which `corral status` has no use for).
_GROUPS: dict[str, Callable[[], None]] = {
    "sim": _register_sim,
    "bench": _register_bench,
    "db": _register_db,
    **dict.fromkeys(("users", "groups", "keys", "quota"), _register_admin),
    **dict.fromkeys(
        ("status", "backends", "models", "workers", "queue", "config", "chat", "generate"),
        _register_ctl,
    ),
    "agent": _register_agent,
}
_BUILT_IN = frozenset({"serve", "version"})


def register_commands(argv: Sequence[str]) -> None:
    """Register the group that ``argv`` (the arguments after ``corral``) runs, or every
    group when it names none of them (``--help``, no argument, a mistyped command)."""
    first = argv[0] if argv else None
    if first in _BUILT_IN:
        return
    if first in _GROUPS:
        _GROUPS[first]()
        return
    for register in dict.fromkeys(_GROUPS.values()):  # each once, in order
        register()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic announces its plugins at INFO on import: noise on every command's stderr.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # httpx announces every request at INFO: the remote commands print their own output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    register_commands(sys.argv[1:])
    app()
