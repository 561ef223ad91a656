"""``corral chat`` and ``corral generate``: a quick try of the fleet from the terminal.

Both speak the gateway's Ollama API and stream the answer as it is written.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from corral.app.ctl.remote import KeyOpt, Remote, UrlOpt, fail, guarded

__all__ = ["chat", "generate"]

SystemOpt = Annotated[
    str | None, typer.Option("--system", "-s", help="A system prompt.", show_default=False)
]
OptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="A model option as name=value (e.g. -o temperature=0.2 -o num_predict=64); repeat.",
        show_default=False,
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="After the answer, print token counts and speed.")
]


def _options(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or ():
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            fail(f"--option {pair!r}: expected name=value")
        try:
            value: Any = json.loads(text)  # numbers, true/false, lists
        except ValueError:
            value = text
        out[name.strip()] = value
    return out


def _stats(last: dict[str, Any]) -> None:
    count = last.get("eval_count")
    ns = last.get("eval_duration")
    speed = f", {count / (ns / 1e9):.1f} tokens/s" if count and ns else ""
    typer.echo(
        f"[{last.get('prompt_eval_count', '?')} prompt tokens, {count or '?'} generated{speed}]",
        err=True,
    )


def _say(remote: Remote, path: str, body: dict[str, Any], field: str) -> dict[str, Any]:
    """Stream one answer to stdout; return its final line and the text."""
    last: dict[str, Any] = {}
    text = []
    for item in remote.stream(path, body):
        part = (
            item.get(field) if field == "response" else (item.get("message") or {}).get("content")
        )
        if part:
            text.append(part)
            sys.stdout.write(part)
            sys.stdout.flush()
        if item.get("done"):
            last = item
    sys.stdout.write("\n")
    sys.stdout.flush()
    last["_text"] = "".join(text)
    return last


@guarded
def chat(
    model: Annotated[str, typer.Argument(help="The model, as the fleet lists it.")],
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="Ask once and exit; without it, a conversation on stdin.", show_default=False
        ),
    ] = None,
    system: SystemOpt = None,
    option: OptionOpt = None,
    verbose: VerboseOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Chat with a model through the gateway (streams; /bye or Ctrl-D ends a conversation)."""
    remote = Remote.resolve(url, key)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    options = _options(option)
    interactive = prompt is None and sys.stdin.isatty()
    turns = [prompt] if prompt is not None else None
    while True:
        if turns is not None:
            if not turns:
                return
            said = turns.pop()
        else:
            try:
                said = input(">>> ") if interactive else sys.stdin.readline()
            except (EOFError, KeyboardInterrupt):
                typer.echo("", err=True)
                return
            if not interactive and not said:
                return
            said = said.strip()
            if said in ("/bye", "/exit"):
                return
            if not said:
                continue
        messages.append({"role": "user", "content": said})
        body = {"model": model, "messages": messages, "stream": True}
        if options:
            body["options"] = options
        last = _say(remote, "/api/chat", body, "message")
        messages.append({"role": "assistant", "content": last.pop("_text")})
        if verbose:
            _stats(last)


@guarded
def generate(
    model: Annotated[str, typer.Argument(help="The model, as the fleet lists it.")],
    prompt: Annotated[str, typer.Argument(help="The prompt; - reads it from stdin.")],
    system: SystemOpt = None,
    option: OptionOpt = None,
    verbose: VerboseOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Complete a prompt with a model through the gateway (streams)."""
    remote = Remote.resolve(url, key)
    text = sys.stdin.read() if prompt == "-" else prompt
    body: dict[str, Any] = {"model": model, "prompt": text, "stream": True}
    if system:
        body["system"] = system
    options = _options(option)
    if options:
        body["options"] = options
    last = _say(remote, "/api/generate", body, "response")
    last.pop("_text")
    if verbose:
        _stats(last)
