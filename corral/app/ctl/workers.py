"""``corral workers ls|spawn|prune``: engine processes the gateway starts itself
(``/admin/workers``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.app.ctl.output import Column, console, counted, print_json, seconds, table
from corral.app.ctl.remote import JsonOpt, KeyOpt, Remote, UrlOpt, fail, guarded, rows_of

__all__ = ["app"]

app = typer.Typer(
    help="Workers: engine processes the gateway starts and stops (admin API).",
    no_args_is_help=True,
)

_PATH = "/admin/workers"
# With wait, the gateway answers once every worker is ready (engine up, models pulled)
# or stopped; its own workers.ready_timeout_s bounds that, so this only guards a hang.
_READY_WAIT_S = 1800.0

ActionJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the gateway's answer as JSON instead of a table.")
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Answer once they are ready (spawn) or stopped (prune); --no-wait answers at once.",
    ),
]

COLUMNS: list[Column] = [
    ("ID", lambda w: w.get("id")),
    ("STATE", lambda w: w.get("state")),
    ("WHY", lambda w: w.get("reason")),
    ("URL", lambda w: w.get("url")),
    ("GPU", lambda w: w.get("gpu")),
    ("PID", lambda w: w.get("pid")),
    ("IN FLIGHT", lambda w: w.get("in_flight")),
    ("SERVED", lambda w: w.get("served")),
    ("IDLE", lambda w: seconds(w.get("idle_s"))),
    ("MODELS", lambda w: w.get("models")),
]
_ENDED: list[Column] = [
    ("ID", lambda w: w.get("id")),
    ("STATE", lambda w: w.get("state")),
    ("ENDED", lambda w: w.get("ended_at")),
    ("EXIT", lambda w: w.get("exit_code")),
    ("ERROR", lambda w: w.get("error")),
]


@app.command("ls")
@guarded
def list_workers(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """List the workers, the last ones that ended, and the autoscaler's settings.

    Each worker's state, why it was started, URL, GPU, pid, load and models."""
    answer = Remote.resolve(url, key).call("GET", _PATH)
    workers = rows_of(answer, "workers", _PATH)
    if as_json:
        print_json(answer)
        return
    out = console()
    if not answer.get("enabled"):
        out.print("workers are not configured on this gateway (set workers.command)")
        return
    scaling = "autoscaling" if answer.get("autoscale") else "no autoscaling"
    out.print(
        f"{counted(len(workers), 'worker')} ({answer.get('provider')}, {answer.get('kind')}), "
        f"min {answer.get('min')}, max {answer.get('max')}, {scaling}"
        + (f", cooling down until {answer['cooling_until']}" if answer.get("cooling_until") else "")
    )
    if workers:
        out.print(table(workers, COLUMNS))
    ended = [w for w in answer.get("recent") or [] if isinstance(w, dict)]
    if ended:
        out.print(table(ended, _ENDED, title="ended"))


def _changed(verb: str, answer: Any, as_json: bool) -> None:
    workers = rows_of(answer, "workers", f"{_PATH}/{verb}")
    if as_json:
        print_json(answer)
        return
    out = console()
    ids = ", ".join(str(w.get("id")) for w in workers)
    out.print(f"{verb}: {counted(len(workers), 'worker')}" + (f" ({ids})" if ids else ""))
    if workers:
        out.print(table(workers, COLUMNS))


@app.command("spawn")
@guarded
def spawn(
    count: Annotated[int, typer.Argument(help="How many workers to start.", min=1)] = 1,
    wait: WaitOpt = True,
    as_json: ActionJsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Start workers.

    Each joins the fleet once its engine answers and holds the required models. Past
    workers.max nothing starts; with --wait, one failing stops them all."""
    answer = Remote.resolve(url, key).call(
        "POST",
        f"{_PATH}/spawn",
        body={"count": count, "wait": wait},
        timeout=_READY_WAIT_S if wait else None,
    )
    _changed("spawn", answer, as_json)


@app.command("prune")
@guarded
def prune(
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Stop every worker, idle ones first, busy ones drained first "
            "\\[default: only idle ones].",
        ),
    ] = False,
    count: Annotated[
        int | None,
        typer.Option(help="Stop at most this many \\[default: all chosen].", min=1),
    ] = None,
    wait: WaitOpt = True,
    as_json: ActionJsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Stop idle workers (or all with --all).

    The autoscaler starts new ones up to workers.min."""
    body: dict[str, Any] = {"mode": "all" if every else "idle", "wait": wait}
    if count is not None:
        body["count"] = count
    answer = Remote.resolve(url, key).call(
        "POST", f"{_PATH}/prune", body=body, timeout=_READY_WAIT_S if wait else None
    )
    if not isinstance(answer, dict):
        fail("the gateway's answer to prune is not an object: is this a Corral gateway?")
    _changed("prune", answer, as_json)
