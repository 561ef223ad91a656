"""Run the gateway under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console

from corral.config import ConfigError, Settings, load_settings
from corral.core.policies import POLICIES

__all__ = ["run"]


def run(config_file: Path | None, overrides: dict[str, Any], *, demo: bool = False) -> int:
    err = Console(stderr=True, soft_wrap=True)
    try:
        settings = load_settings(config_file, overrides=overrides, known_policies=POLICIES)
    except ConfigError as exc:
        err.print(f"[bold red]corral: invalid configuration[/]\n{exc}", highlight=False)
        return 2
    logging.getLogger().setLevel(settings.log_level.upper())
    if not settings.backends and not demo:
        err.print(
            "[yellow]corral: no backends configured[/] — pass --backend URL, set "
            "CORRAL_BACKENDS, use --config, or try --demo.",
            highlight=False,
        )
    app = build(settings, demo=demo)
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
    uvicorn.Server(config).run()
    return 0


def build(settings: Settings, *, demo: bool = False) -> Any:
    from corral.app.factory import create_app

    if not demo:
        return create_app(settings)
    from corral.app.demo import start_demo_fleet, stop_demo_fleet

    return create_app(settings, on_startup=start_demo_fleet, on_shutdown=stop_demo_fleet)


def _banner(err: Console, settings: Settings, demo: bool) -> None:
    where = f"http://{settings.host}:{settings.port}"
    n = len(settings.backends)
    extra = " plus a simulated demo fleet" if demo else ""
    err.print(f"[bold]Corral[/] on {where} — {n} configured backend(s){extra}", highlight=False)
    err.print(
        f"  try: OLLAMA_HOST={where} ollama list",
        highlight=False,
    )
