"""``corral agent``: run the node agent beside an engine (docs/agent.md)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from corral.agent.options import AgentOptions

__all__ = ["agent"]


def agent(
    gateway: Annotated[
        str,
        typer.Option(
            "--gateway",
            "-g",
            envvar="CORRAL_GATEWAY_URL",
            help="The gateway's base URL, e.g. http://gw:8088 (env CORRAL_GATEWAY_URL).",
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CORRAL_FLEET_TOKEN",
            help="The fleet token (env CORRAL_FLEET_TOKEN; prefer it or --token-file: a "
            "flag shows in the process list).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the fleet token.", dir_okay=False),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="The engine's URL as this host reaches it.")
    ] = "http://127.0.0.1:11434",
    kind: Annotated[
        str,
        typer.Option(help="The engine's API: ollama, or openai (vLLM, llama.cpp server)."),
    ] = "ollama",
    node_id: Annotated[
        str | None,
        typer.Option(help="The node's id, also its backend's name \\[default: the host name]."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 10.0,
    advertise_url: Annotated[
        str | None,
        typer.Option(
            help="The URL the gateway should use for this node \\[default: the relay's URL "
            "with --relay, else the engine's]."
        ),
    ] = None,
    relay: Annotated[
        bool,
        typer.Option(
            help="Serve a relay in front of the engine (for an engine bound to localhost) "
            "and advertise it; it forwards only requests carrying the fleet token."
        ),
    ] = False,
    relay_host: Annotated[str, typer.Option(help="Address the relay listens on.")] = "0.0.0.0",
    relay_port: Annotated[
        int, typer.Option(help="Port the relay listens on (0 = any free port).")
    ] = 11435,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            help="Requests the gateway sends this node at once \\[default: the gateway's, "
            "4 for ollama, 32 for openai]."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the node agent beside an Ollama, vLLM or llama.cpp server: it heartbeats to
    the gateway with the node's engine, models, addresses and load."""
    from corral.agent.options import AgentOptions, OptionError, default_node_id, read_token

    level = log_level.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        _fail(f"--log-level: {log_level!r} is not debug, info, warning or error")
    logging.getLogger().setLevel(level)
    try:
        opts = AgentOptions.checked(
            gateway=gateway,
            token=read_token(token, token_file),
            engine=engine,
            kind=kind.strip().lower(),
            node_id=node_id if node_id is not None else default_node_id(),
            interval_s=interval,
            advertise_url=advertise_url,
            relay=relay,
            relay_host=relay_host,
            relay_port=relay_port,
            max_concurrency=max_concurrency,
        )
    except OptionError as exc:
        _fail(str(exc))
    try:
        asyncio.run(_run(opts))
    except OSError as exc:  # the relay's port is taken, say
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    typer.echo(f"corral agent: {message}", err=True)
    raise typer.Exit(2)


async def _run(opts: AgentOptions) -> None:
    from corral.agent.runner import Agent

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if sys.platform != "win32":
            loop.add_signal_handler(sig, stop.set)
    await Agent(opts, hostname=socket.gethostname()).run(stop)
