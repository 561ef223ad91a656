"""``corral queue`` (and ``queue pause|resume``): what waits for a backend slot."""

from __future__ import annotations

from typing import Any

import typer

from corral.app.ctl.output import Column, console, print_json, seconds, table
from corral.app.ctl.remote import JsonOpt, KeyOpt, Remote, UrlOpt, fail, guarded

__all__ = ["app"]

app = typer.Typer(
    help="The gateway's queue: show it (no sub-command), pause or resume admission.",
    invoke_without_command=True,
)

_PATH = "/admin/queue"

_TENANTS: list[Column] = [
    ("TENANT", lambda t: t.get("tenant")),
    ("WEIGHT", lambda t: t.get("weight")),
    ("WAITING", lambda t: t.get("waiting")),
    ("OLDEST", lambda t: seconds(t.get("oldest_wait_s"))),
    ("BY MODEL", lambda t: t.get("by_model")),
    ("SERVICE", lambda t: t.get("service")),
]


def _show(answer: Any, as_json: bool) -> None:
    if not isinstance(answer, dict) or "waiting" not in answer:
        fail(f"{_PATH} answered something that is not the queue: is this a Corral gateway?")
    if as_json:
        print_json(answer)
        return
    out = console()
    head = (
        f"{answer.get('waiting')} waiting (at most {answer.get('max_waiting')}), "
        f"{answer.get('in_flight')} in flight"
    )
    oldest = seconds(answer.get("oldest_wait_s"))
    if oldest and answer.get("waiting"):
        head += f", oldest waiting {oldest}"
    if answer.get("paused"):
        head += "; admission PAUSED (corral queue resume)"
    out.print(head)
    if answer.get("by_model"):
        out.print("by model: " + ", ".join(f"{m} {n}" for m, n in answer["by_model"].items()))
    tenants = [t for t in answer.get("tenants") or [] if isinstance(t, dict)]
    if tenants:
        out.print(table(tenants, _TENANTS))


@app.callback()
@guarded
def queue(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Show the queue (without a sub-command): what waits for a backend slot.

    Requests waiting per tenant and per model, the oldest wait, whether admission is
    paused."""
    if ctx.invoked_subcommand is None:
        _show(Remote.resolve(url, key).call("GET", _PATH), as_json)


@app.command("pause")
@guarded
def pause(as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Pause admission: requests queue, none is dispatched.

    Requests wait (up to queue.max_waiting, each until its deadline) while running
    ones finish; until `corral queue resume` or a restart."""
    _show(Remote.resolve(url, key).call("POST", f"{_PATH}/pause"), as_json)


@app.command("resume")
@guarded
def resume(as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Resume admission: waiting requests take free slots at once, in fair order."""
    _show(Remote.resolve(url, key).call("POST", f"{_PATH}/resume"), as_json)
