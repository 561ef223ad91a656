"""``corral status``: the fleet at a glance, once or refreshed every few seconds.

One look is three reads of the admin API: ``/admin/backends`` (live state of each),
``/admin/nodes`` (whether an agent's node went silent; only asked when a backend
came from an agent) and ``/admin/queue`` (what waits for a slot).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from corral.app.ctl.fleetview import (
    breakers_cell,
    in_flight_cell,
    loaded_cell,
    state_of,
    styled,
)
from corral.app.ctl.output import Column, console, counted, print_json, seconds, table
from corral.app.ctl.remote import (
    JsonOpt,
    KeyOpt,
    Remote,
    RemoteError,
    UrlOpt,
    fail,
    guarded,
)

__all__ = ["look", "status"]

COLUMNS: list[Column] = [
    ("NAME", lambda b: b.get("name")),
    ("KIND", lambda b: b.get("kind")),
    ("ORIGIN", lambda b: b.get("origin")),
    ("STATE", lambda b: styled(str(b.get("state")))),
    ("IN FLIGHT", in_flight_cell),
    ("QUEUE", lambda b: b.get("queued")),
    ("LOADED", loaded_cell),
    ("BREAKER", breakers_cell),
    ("LAST ERROR", lambda b: b.get("last_error")),
]


def _objects(answer: Any, field: str, path: str) -> list[dict[str, Any]]:
    rows = answer.get(field) if isinstance(answer, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RemoteError(f"{path} answered without a {field!r} list: is this a Corral gateway?")
    return rows


def look(remote: Remote) -> dict[str, Any]:
    """The fleet now: backends (each with its one-word ``state``), the queue, totals.
    Raises `RemoteError`."""
    backends = _objects(remote.fetch("GET", "/admin/backends"), "backends", "/admin/backends")
    nodes: dict[str, str] = {}
    if any(b.get("origin") == "agent" for b in backends):
        listed = _objects(remote.fetch("GET", "/admin/nodes"), "nodes", "/admin/nodes")
        nodes = {str(n.get("id")): str(n.get("status")) for n in listed}
    queue = remote.fetch("GET", "/admin/queue")
    if not isinstance(queue, dict):
        raise RemoteError("/admin/queue answered something that is not an object")
    for b in backends:
        b["state"] = state_of(b, nodes.get(str(b.get("name"))))
    states: dict[str, int] = {}
    for b in backends:
        states[b["state"]] = states.get(b["state"], 0) + 1
    totals = {
        "backends": len(backends),
        "states": dict(sorted(states.items())),
        "in_flight": sum(int(b.get("in_flight") or 0) for b in backends),
        "slots": sum(
            int(b.get("max_concurrency") or 0) for b in backends if b["state"] == "healthy"
        ),
        "waiting": queue.get("waiting", 0),
        "oldest_wait_s": queue.get("oldest_wait_s"),
        "paused": bool(queue.get("paused")),
        "models_loaded": len({m for b in backends for m in loaded_cell(b)}),
    }
    return {"backends": backends, "queue": queue, "totals": totals}


def _totals_line(totals: dict[str, Any]) -> Text:
    counts = ", ".join(f"{n} {state}" for state, n in totals["states"].items()) or "none"
    line = Text(f"{counted(totals['backends'], 'backend')} ({counts})")
    line.append(f" · in flight {totals['in_flight']} of {totals['slots']} healthy slots")
    line.append(f" · queue {totals['waiting']} waiting")
    oldest = seconds(totals.get("oldest_wait_s"))
    if oldest and totals["waiting"]:
        line.append(f" (oldest {oldest})")
    line.append(f" · loaded models: {totals['models_loaded']}")
    if totals["paused"]:
        line.append(" · admission PAUSED", style="bold red")
    return line


def render(seen: dict[str, Any]) -> RenderableType:
    backends = seen["backends"]
    body: RenderableType = (
        table(backends, COLUMNS) if backends else Text("(no backends)", style="dim")
    )
    return Group(body, _totals_line(seen["totals"]))


def _frame(remote: Remote, every: float) -> RenderableType:
    stamp = datetime.now().strftime("%H:%M:%S")
    head = Text(f"{remote.url} at {stamp}, every {every:g} s (Ctrl-C ends)", style="dim")
    try:
        return Group(head, render(look(remote)))
    except RemoteError as exc:  # keep watching: the gateway may be restarting
        return Group(head, Text(f"error: {exc}", style="red"))


def _watch(remote: Remote, every: float, as_json: bool) -> None:
    out = console()
    try:
        if as_json:  # one JSON object a line, for scripts that follow the fleet
            while True:
                try:
                    print(json.dumps(look(remote), default=str), flush=True)
                except RemoteError as exc:
                    typer.echo(f"error: {exc}", err=True)
                time.sleep(every)
        elif out.is_terminal:
            with Live(_frame(remote, every), console=out, auto_refresh=False) as live:
                while True:
                    time.sleep(every)
                    live.update(_frame(remote, every), refresh=True)
        else:  # a pipe or a file: each look printed in turn, a log of the fleet
            while True:
                out.print(_frame(remote, every))
                out.print()
                out.file.flush()
                time.sleep(every)
    except KeyboardInterrupt:
        return


@guarded
def status(
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch",
            "-w",
            help="Refresh every this many seconds until Ctrl-C (with --json: one JSON "
            "object a line).",
            min=0.1,
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Show the fleet: every backend's state and load, with totals.

    Each backend's kind, origin, state (healthy, degraded, down, draining, drained,
    offline, disabled), requests in flight of its slots, requests queued for its
    models, loaded models, breakers not closed and last error; then the totals and
    the queue."""
    remote = Remote.resolve(url, key)
    if watch is not None:
        _watch(remote, watch, as_json)
        return
    try:
        seen = look(remote)
    except RemoteError as exc:
        fail(str(exc))
    if as_json:
        print_json(seen)
    else:
        console().print(render(seen))
