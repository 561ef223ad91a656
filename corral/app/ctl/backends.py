"""``corral backends ls|add|rm|drain|undrain|enable|disable|refresh`` (``/admin/backends``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from corral.app.ctl.fleetview import (
    breakers_cell,
    in_flight_cell,
    loaded_cell,
    state_of,
    styled,
)
from corral.app.ctl.output import Column, console, print_json, show
from corral.app.ctl.remote import JsonOpt, KeyOpt, Remote, UrlOpt, fail, guarded, rows_of

__all__ = ["app"]

app = typer.Typer(
    help="The fleet's backends: list, register, deregister, drain, enable, disable (admin API).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The backend's name (as `corral backends ls` shows).")]
ShowJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the backend as the gateway answers it, as JSON.")
]

_PATH = "/admin/backends"
_DRAIN_MARGIN_S = 30.0  # beyond --wait: the gateway answers once the wait is over

COLUMNS: list[Column] = [
    ("NAME", lambda b: b.get("name")),
    ("KIND", lambda b: b.get("kind")),
    ("ORIGIN", lambda b: b.get("origin")),
    ("STATE", lambda b: styled(state_of(b))),
    ("IN FLIGHT", in_flight_cell),
    ("WEIGHT", lambda b: b.get("weight")),
    ("MODELS", lambda b: len(b.get("models") or [])),
    ("LOADED", loaded_cell),
    ("BREAKERS", breakers_cell),
    ("URL", lambda b: b.get("url")),
]


def _one(name: str) -> str:
    return f"{_PATH}/{quote(name, safe='')}"


def _said(verb: str, backend: Any, as_json: bool) -> None:
    if not isinstance(backend, dict) or "name" not in backend:
        fail(f"the gateway's answer to {verb} is not a backend: is this a Corral gateway?")
    if as_json:
        print_json(backend)
        return
    state = state_of(backend)
    detail = f"{in_flight_cell(backend)} in flight"
    if state == "down" and backend.get("last_error"):
        detail += f"; last error: {backend['last_error']}"
    console().print(f"{verb} {backend['name']}: {state} ({detail})")


@app.command("ls")
@guarded
def list_backends(
    origin: Annotated[
        str | None,
        typer.Option(help="Only this origin: config, registered, agent or worker."),
    ] = None,
    tag: Annotated[str | None, typer.Option(help="Only backends with this tag.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """List the backends with their live state.

    State (healthy, down, draining, drained, disabled), requests in flight, models held
    and loaded, breakers not closed."""
    answer = Remote.resolve(url, key).call("GET", _PATH, params={"origin": origin, "tag": tag})
    show(rows_of(answer, "backends", _PATH), COLUMNS, as_json=as_json, what="backends")


def _label(pair: str) -> tuple[str, str]:
    name, sep, value = pair.partition("=")
    if not sep or not name.strip():
        fail(f"--label {pair!r}: expected name=value")
    return name.strip(), value


@app.command("add")
@guarded
def add(
    backend_url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="The engine's base URL: http://host:port for Ollama, openai+http://host:port "
            "for an OpenAI-compatible server (vLLM, llama.cpp).",
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(help="ollama or openai, instead of the URL's prefix \\[default: ollama]."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="A unique name \\[default: host:port].", show_default=False)
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            help="Requests sent to it at once \\[default: 4 for ollama, 32 for openai].",
            show_default=False,
        ),
    ] = None,
    weight: Annotated[
        float | None,
        typer.Option(
            help="Relative share for weighted policies \\[default: 1].", show_default=False
        ),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="A tag; repeat for more.", show_default=False)
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(help="A label as name=value; repeat for more.", show_default=False),
    ] = None,
    as_json: ShowJsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Register a backend (kept across restarts).

    The gateway probes the URL first and refuses it unless an engine of that kind
    answers there. It is kept in the store: it rejoins after a restart."""
    fields: dict[str, Any] = {
        "url": backend_url,
        "kind": kind,
        "name": name,
        "max_concurrency": max_concurrency,
        "weight": weight,
        "tags": list(tag) if tag else None,
        "labels": dict(_label(p) for p in label) if label else None,
    }
    body = {k: v for k, v in fields.items() if v is not None}
    _said("registered", Remote.resolve(url, key).call("POST", _PATH, body=body), as_json)


@app.command("rm")
@guarded
def remove(
    name: NameArg, as_json: ShowJsonOpt = False, url: UrlOpt = None, key: KeyOpt = None
) -> None:
    """Deregister a backend added with `corral backends add`.

    Requests running on it finish, nothing new goes to it, and it does not come back
    after a restart. Backends of the config file, agents and workers are removed
    where they came from."""
    _said("deregistered", Remote.resolve(url, key).call("DELETE", _one(name)), as_json)


@app.command("drain")
@guarded
def drain(
    name: NameArg,
    wait: Annotated[
        float,
        typer.Option(
            help="Wait up to this many seconds for its requests to finish (0: do not wait).",
            min=0,
            max=3600,
        ),
    ] = 0.0,
    as_json: ShowJsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Drain a backend: it finishes what it has and takes nothing new.

    Until `corral backends undrain` or a restart."""
    answer = Remote.resolve(url, key).call(
        "POST",
        _one(name) + "/drain",
        params={"wait_s": wait or None},
        timeout=wait + _DRAIN_MARGIN_S,
    )
    _said("drain", answer, as_json)


@app.command("undrain")
@guarded
def undrain(
    name: NameArg, as_json: ShowJsonOpt = False, url: UrlOpt = None, key: KeyOpt = None
) -> None:
    """Let a draining backend take new requests again."""
    _said("undrain", Remote.resolve(url, key).call("POST", _one(name) + "/undrain"), as_json)


@app.command("enable")
@guarded
def enable(
    name: NameArg, as_json: ShowJsonOpt = False, url: UrlOpt = None, key: KeyOpt = None
) -> None:
    """Let a disabled backend take requests again."""
    _said("enable", Remote.resolve(url, key).call("POST", _one(name) + "/enable"), as_json)


@app.command("disable")
@guarded
def disable(
    name: NameArg, as_json: ShowJsonOpt = False, url: UrlOpt = None, key: KeyOpt = None
) -> None:
    """Keep a backend (and probe it) but send it nothing.

    Running requests finish. Kept across restarts for a registered backend."""
    _said("disable", Remote.resolve(url, key).call("POST", _one(name) + "/disable"), as_json)


@app.command("refresh")
@guarded
def refresh(
    name: NameArg, as_json: ShowJsonOpt = False, url: UrlOpt = None, key: KeyOpt = None
) -> None:
    """Probe a backend now and re-read its models and loaded models."""
    _said("refresh", Remote.resolve(url, key).call("POST", _one(name) + "/refresh"), as_json)
