"""Run the gateway under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.markup import escape

from corral.app.auth import AuthStartError, admin_key_from
from corral.app.listener import Server
from corral.app.nodes import FleetTokenError, load_fleet_token
from corral.config import ConfigError, ConfigSource, Settings
from corral.core.names import url_host
from corral.core.policies import POLICIES

__all__ = ["run"]


def run(config_file: Path | None, overrides: dict[str, Any], *, demo: bool = False) -> int:
    err = Console(stderr=True, soft_wrap=True)
    # Kept by the gateway: POST /admin/config/reload reads the same sources again.
    source = ConfigSource(config_file, dict(overrides), None, tuple(POLICIES))
    try:
        settings = source.load()
    except ConfigError as exc:
        err.print(f"[bold red]corral: invalid configuration[/]\n{exc}", highlight=False)
        return 2
    try:
        admin_key_from(os.environ)
        load_fleet_token(settings.fleet)
    except (AuthStartError, FleetTokenError) as exc:
        err.print(f"[bold red]corral: {exc}[/]", highlight=False)
        return 2
    logging.getLogger().setLevel(settings.log_level.upper())
    if not settings.backends and not settings.workers.enabled and not demo:
        err.print(
            "[yellow]corral: no backends configured[/] — pass --backend URL, set "
            "CORRAL_BACKENDS, use --config (backends or workers), or try --demo.",
            highlight=False,
        )
    app = build(settings, demo=demo, source=source)
    _banner(err, settings, demo)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # Corral is the edge; no X-Forwarded-* rewriting per request
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    # Everything built so far (modules, classes, the app) lives as long as the process:
    # keep the collector from walking it again in every full collection, which took
    # 20-60 ms with 1,000 streams open and stalled every stream that long.
    gc.freeze()
    # From here the collector runs on a clock, not on allocation counts: see
    # corral/app/collector.py for why a streaming gateway needs that.
    Server(config, pace_collector=True).run()
    return 0


def build(settings: Settings, *, demo: bool = False, source: ConfigSource | None = None) -> Any:
    from corral.app.factory import create_app

    if not demo:
        return create_app(settings, config_source=source)
    from corral.app.demo import start_demo_fleet, stop_demo_fleet

    return create_app(
        settings,
        config_source=source,
        on_startup=start_demo_fleet,
        on_shutdown=stop_demo_fleet,
    )


def _banner(err: Console, settings: Settings, demo: bool) -> None:
    where = f"http://{url_host(settings.host)}:{settings.port}"
    n = len(settings.backends)
    extra = " plus a simulated demo fleet" if demo else ""
    err.print(
        f"[bold]Corral[/] on {escape(where)} — {n} configured backend(s){extra}", highlight=False
    )
    if settings.auth.required(settings.host):
        err.print(
            f"  auth: ON (auth.mode {settings.auth.mode}) — requests need "
            "Authorization: Bearer <key>; make one with: corral users create --admin NAME",
            highlight=False,
        )
    else:
        err.print(
            f"  auth: OFF (auth.mode {settings.auth.mode}, host {settings.host})",
            highlight=False,
        )
    fleet = settings.fleet
    if fleet.token is not None or fleet.token_file is not None:
        err.print("  node agents: join with the fleet token (corral agent)", highlight=False)
    err.print(
        f"  try: OLLAMA_HOST={where} ollama list",
        highlight=False,
    )
