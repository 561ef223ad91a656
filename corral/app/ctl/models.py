"""``corral models ls|pull|rm|warm|unload``: the fleet's models (``/admin/models...``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from corral.app.ctl.output import Column, console, counted, human_bytes, print_json, show, table
from corral.app.ctl.pull import follow_pull
from corral.app.ctl.remote import JsonOpt, KeyOpt, Remote, UrlOpt, fail, guarded, rows_of

__all__ = ["app", "print_action"]

app = typer.Typer(
    help="The fleet's models: list, pull, delete, warm up, unload (admin API).",
    no_args_is_help=True,
)

ModelArg = Annotated[str, typer.Argument(help="The model, by any name clients use for it.")]
BackendOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--backend",
        "-b",
        help="Act on this backend (name or URL); repeat for more. Default: see the command.",
        show_default=False,
    ),
]
ActionJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the gateway's answer as JSON instead of a table.")
]

_LOAD_WAIT_S = 900.0  # a warm-up answers once the model is loaded: large models take minutes

_RESULT_COLUMNS: list[Column] = [
    ("BACKEND", lambda r: r.get("backend")),
    ("KIND", lambda r: r.get("kind")),
    ("RESULT", lambda r: r.get("status")),
    ("DETAIL", lambda r: r.get("error") or r.get("reason")),
]


def _body(model: str, backend: list[str] | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, **{k: v for k, v in extra.items() if v is not None}}
    if backend:
        body["backends"] = list(backend)
    return body


def print_action(verb: str, answer: Any, as_json: bool, *, residency: bool = False) -> None:
    """Print an action's per-backend results; exit 1 when a backend failed."""
    if not isinstance(answer, dict):
        fail(f"the gateway's answer to {verb} is not an object: is this a Corral gateway?")
    results = rows_of(answer, "results", verb)
    if as_json:
        print_json(answer)
    else:
        columns = list(_RESULT_COLUMNS)
        if residency:
            columns.append(("LOADED", lambda r: r.get("loaded")))
            columns.append(("UNTIL", lambda r: r.get("expires_at")))
        out = console()
        out.print(f"{verb} {answer.get('model')}: {answer.get('status')}")
        if answer.get("message"):
            out.print(str(answer["message"]))
        if results:
            out.print(table(results, columns))
    _judge(verb, results)


def _judge(verb: str, results: list[dict[str, Any]]) -> None:
    failed = [r for r in results if r.get("status") == "error"]
    if failed:
        names = ", ".join(str(r.get("backend")) for r in failed)
        fail(f"{verb} failed on {len(failed)} of {counted(len(results), 'backend')}: {names}")


@app.command("ls")
@guarded
def list_models(as_json: JsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """List the fleet's models.

    Each with the backends holding it, where it is loaded, its size and how often it
    was asked for recently."""
    path = "/admin/models"
    rows = rows_of(Remote.resolve(url, key).call("GET", path), "models", path)

    def size(row: Mapping[str, Any]) -> str | None:
        return human_bytes(max((p.get("size") or 0 for p in row.get("backends") or []), default=0))

    columns: list[Column] = [
        ("MODEL", lambda r: r.get("model")),
        ("HELD BY", lambda r: [p.get("backend") for p in r.get("backends") or []]),
        ("LOADED ON", lambda r: r.get("loaded_on")),
        ("SIZE", size),
        ("REQ 1M", lambda r: (r.get("demand") or {}).get("requests_1m")),
        ("REQ 15M", lambda r: (r.get("demand") or {}).get("requests_15m")),
        ("ALIASES", lambda r: r.get("aliases")),
    ]
    show(rows, columns, as_json=as_json, what="models")


@app.command("pull")
@guarded
def pull(
    model: ModelArg,
    backend: BackendOpt = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow an insecure registry (Ollama's insecure).")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the gateway's NDJSON progress lines instead of bars."),
    ] = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Pull a model onto many backends, with a progress bar per backend.

    Pulls on the --backend ones, or on every healthy Ollama backend (OpenAI-kind
    servers cannot pull: they are listed as skipped). Exit code 1 if any backend
    failed."""
    remote = Remote.resolve(url, key)
    body = _body(model, backend, insecure=insecure or None)
    # No read timeout: a pull may be silent for long (the gateway ends a stalled one).
    lines = remote.stream("/admin/models/pull", body, timeout=None)
    if as_json:
        summary = None
        for line in lines:
            print(json.dumps(line), flush=True)
            if isinstance(line, dict) and line.get("type") == "summary":
                summary = line
    else:
        summary = follow_pull(lines)
    if summary is None:
        fail("the pull stream ended before its summary: the gateway went away?")
    if as_json:
        _judge("pull", rows_of(summary, "results", "pull"))
        return
    print_action("pull", summary, False)


@app.command("rm")
@guarded
def remove(
    model: ModelArg,
    backend: BackendOpt = None,
    as_json: ActionJsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Delete a model from many backends.

    From the --backend ones, or from every healthy Ollama backend holding it."""
    answer = Remote.resolve(url, key).call(
        "POST", "/admin/models/delete", body=_body(model, backend)
    )
    print_action("rm", answer, as_json)


@app.command("warm")
@guarded
def warm(
    model: ModelArg,
    backend: BackendOpt = None,
    copies: Annotated[
        int | None,
        typer.Option(
            help="Without --backend: load it on this many backends, chosen as the scheduler "
            "would route \\[default: 1].",
            min=1,
            show_default=False,
        ),
    ] = None,
    keep_alive: Annotated[
        str | None,
        typer.Option(
            help="How long it stays loaded once idle: seconds, or 30m, 2h; negative = until "
            "unloaded \\[default: the backend's].",
            show_default=False,
        ),
    ] = None,
    as_json: ActionJsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Load a model into memory ahead of demand.

    On the --backend ones, or on --copies of the backends holding it, chosen as the
    scheduler would route. Answers once the loads are done."""
    if backend and copies is not None:
        fail("give --backend or --copies, not both")
    alive: Any = keep_alive
    if keep_alive is not None:
        try:
            alive = float(keep_alive) if "." in keep_alive else int(keep_alive)
        except ValueError:
            alive = keep_alive  # a duration such as 30m: the gateway reads it
    body = _body(model, backend, copies=copies, keep_alive=alive)
    answer = Remote.resolve(url, key).call(
        "POST", "/admin/models/warm", body=body, timeout=_LOAD_WAIT_S
    )
    print_action("warm", answer, as_json, residency=True)


@app.command("unload")
@guarded
def unload(
    model: ModelArg,
    backend: BackendOpt = None,
    as_json: ActionJsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Unload a model from memory (it stays on disk).

    From the --backend ones, or from every Ollama backend where it is loaded."""
    answer = Remote.resolve(url, key).call(
        "POST", "/admin/models/unload", body=_body(model, backend)
    )
    print_action("unload", answer, as_json, residency=True)
