"""``corral config get|set|reload|save``: the running gateway's settings (``/admin/config``).

``set SECTION KEY=VALUE...`` changes a few fields of a section: it reads the section
as the gateway runs it, changes those fields and sends the section back whole (the
gateway replaces one section at a time). A section holding a masked secret is not
sent back that way, so a ``***`` never overwrites the real value: give it whole with
``--file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
import yaml

from corral.app.ctl.output import console, counted, print_json
from corral.app.ctl.remote import KeyOpt, Remote, UrlOpt, fail, guarded

__all__ = ["app", "apply_pairs"]

app = typer.Typer(
    help="The running gateway's settings: show, change a section, reload, save (admin API).",
    no_args_is_help=True,
)

_PATH = "/admin/config"
_MASK = "***"

ActionJsonOpt = Annotated[bool, typer.Option("--json", help="Print the gateway's answer as JSON.")]


def _running(remote: Remote) -> dict[str, Any]:
    answer = remote.call("GET", _PATH)
    if not isinstance(answer, dict) or not isinstance(answer.get("config"), dict):
        fail(f"{_PATH} answered without a 'config' object: is this a Corral gateway?")
    return answer


def _section(config: dict[str, Any], section: str) -> Any:
    if section not in config:
        fail(f"unknown config section {section!r}; known: {', '.join(config)}")
    return config[section]


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


@app.command("get")
@guarded
def get(
    section: Annotated[
        str | None,
        typer.Argument(help="One section or top-level setting (queue, backends, port, ...)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Print the running settings, or one section, as YAML (or JSON).

    Defaults included, secrets masked."""
    answer = _running(Remote.resolve(url, key))
    config = answer["config"]
    if section is not None:
        value = _section(config, section)
        if as_json:
            print_json(value)
        else:
            print(_yaml({section: value}), end="")
        return
    if as_json:
        print_json(answer)
        return
    print(f"# file: {answer.get('file') or '(none: env and flags only)'}")
    waiting = answer.get("restart_needed") or []
    if waiting:
        print(f"# changed, in effect after a restart: {', '.join(map(str, waiting))}")
    print(_yaml(config), end="")


def _value(text: str) -> Any:
    """A value as YAML reads it: 30, 2.5, true, null, [a, b], {x: 1}, or a string."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def apply_pairs(section: str, current: Any, pairs: list[str]) -> Any:
    """``current`` with each ``key.sub=value`` of ``pairs`` set (a new object)."""
    if not isinstance(current, dict):
        if len(pairs) != 1:
            fail(f"{section} is a single setting or a list: give one value "
                 f"(corral config set {section} VALUE) or --file")  # fmt: skip
        text = pairs[0]
        return _value(text.removeprefix(f"{section}="))
    new: dict[str, Any] = _copy(current)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            fail(f"{pair!r}: expected KEY=VALUE (e.g. max_waiting=100)")
        *parents, leaf = name.strip().split(".")
        where: dict[str, Any] = new
        for i, part in enumerate(parents):
            child = where.get(part)
            if child is None:
                child = where[part] = {}
            if not isinstance(child, dict):
                fail(f"{section}.{'.'.join(parents[: i + 1])} is not a section: cannot set {name}")
            where = child
        where[leaf] = _value(text)
    return new


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _masked(value: Any, path: str) -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _masked(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _masked(v, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and _MASK in value else []


def _from_file(section: str, path: Path) -> Any:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        fail(f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}")
    # The output of `corral config get SECTION` (SECTION: value) is taken as it is.
    if isinstance(data, dict) and list(data) == [section]:
        return data[section]
    return data


def _print_change(what: str, answer: Any, as_json: bool) -> None:
    if not isinstance(answer, dict) or not isinstance(answer.get("changed"), list):
        fail(f"the gateway's answer to {what} is not a change report: is this a Corral gateway?")
    if as_json:
        print_json(answer)
        return
    out = console()
    changed = answer["changed"]
    if not changed:
        out.print(f"{what}: nothing changed")
        return
    out.print(f"{what}: {counted(len(changed), 'setting')} changed")
    for label, field in (
        ("in effect now", "applied_live"),
        ("in effect after a restart", "needs_restart"),
        ("backends added", "backends_added"),
        ("backends removed", "backends_removed"),
        ("backends updated", "backends_updated"),
    ):
        names = answer.get(field) or []
        if names:
            out.print(f"  {label}: {', '.join(map(str, names))}")


@app.command("set")
@guarded
def set_section(
    section: Annotated[str, typer.Argument(help="The section or top-level setting to change.")],
    pairs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[KEY=VALUE]...",
            help="Fields to change (dotted for nested ones: limits.max_body_bytes=...); "
            "values are read as YAML: 30, true, [a, b]. For a single setting, its value.",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="A YAML or JSON file holding the section's whole new value.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Put the section back to its default.")
    ] = False,
    as_json: ActionJsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Change one section of the running settings.

    Checked as a whole first (a bad value changes nothing), applied at once where the
    gateway can; the answer says what waits for a restart. Not written to the file:
    see `corral config save`."""
    given = sum((bool(pairs), file is not None, reset))
    if given != 1:
        fail("give KEY=VALUE pairs, --file or --reset (one of them)")
    remote = Remote.resolve(url, key)
    value: Any
    if reset:
        value = None
    elif file is not None:
        value = _from_file(section, file)
    else:
        current = _section(_running(remote)["config"], section)
        masked = _masked(current, section)
        if masked:
            fail(
                f"{', '.join(masked)} is masked in what the gateway shows: give the whole "
                f"section with --file so the secret is not replaced by {_MASK}"
            )
        value = apply_pairs(section, current, list(pairs or []))
    answer = remote.call("PUT", f"{_PATH}/{quote(section, safe='')}", body=value)
    _print_change(f"set {section}", answer, as_json)


@app.command("reload")
@guarded
def reload(as_json: ActionJsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Reload the settings from the file the gateway started from.

    Reads the file, environment and flags again and applies them; changes made at run
    time and not saved are lost."""
    _print_change("reload", Remote.resolve(url, key).call("POST", f"{_PATH}/reload"), as_json)


@app.command("save")
@guarded
def save(as_json: ActionJsonOpt = False, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Write the running settings to the config file the gateway started from."""
    answer = Remote.resolve(url, key).call("POST", f"{_PATH}/save")
    if not isinstance(answer, dict) or "file" not in answer:
        fail("the gateway's answer to save is not what it should be: is this a Corral gateway?")
    if as_json:
        print_json(answer)
    else:
        console().print(f"saved to {answer['file']} ({answer.get('bytes')} bytes)")
