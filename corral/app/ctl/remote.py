"""Where the gateway is and who we are to it; one HTTP call, or one clear error line.

The URL and key come from, first to last: ``--url``/``--key``, the environment
(``CORRAL_URL``, ``CORRAL_API_KEY``), the file ``$XDG_CONFIG_HOME/corral/config.toml``
(default ``~/.config/corral/config.toml``; ``CORRAL_CLI_CONFIG`` names another) with
top-level ``url = "..."`` and ``key = "..."``, then ``http://127.0.0.1:8088`` and no key.

Every failure — the gateway unreachable, a refusal, a malformed answer — ends the
command with one ``error: ...`` line on stderr and a non-zero exit code, never a traceback.
`Remote.fetch` raises `RemoteError` instead, for a caller that goes on (``status --watch``).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import httpx
import typer

__all__ = [
    "DEFAULT_URL",
    "JsonOpt",
    "KeyOpt",
    "Remote",
    "RemoteError",
    "UrlOpt",
    "cli_config_path",
    "fail",
    "guarded",
    "rows_of",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "http://127.0.0.1:8088"

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The gateway's base URL (env CORRAL_URL; config file `url`) "
        f"\\[default: {DEFAULT_URL}].",
        show_default=False,
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="API key sent as Authorization: Bearer (env CORRAL_API_KEY; config file `key`).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class RemoteError(Exception):
    """A call that failed, carrying the one line to print."""


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """A remote command whose reading of an answer trips over a shape it did not expect
    (a field missing or of another type: a gateway of another version, or not Corral)
    ends with one error line instead of a traceback."""

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
            fail(f"the gateway answered something this corral cannot read ({exc!r})")

    return run


def rows_of(answer: Any, field: str, path: str) -> list[dict[str, Any]]:
    """``answer[field]`` as a list of objects, or one clear error naming the route."""
    rows = answer.get(field) if isinstance(answer, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        fail(f"{path} answered without a {field!r} list of objects: is this a Corral gateway?")
    return rows


def cli_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    named = env.get("CORRAL_CLI_CONFIG")
    if named:
        return Path(named)
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "corral" / "config.toml"


def _file_settings(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    for field in ("url", "key"):
        if field in data and not isinstance(data[field], str):
            fail(f"{path}: {field} must be a string")
    return data


def _message(resp: httpx.Response) -> str:
    """The error's text in either dialect's shape, else the body's start."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        if error.get("code") == "RouteNotFound":
            # The gateway is there but lacks the route: older than this command.
            return f"{error['message']} (a Corral gateway older than this command?)"
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return json.dumps(body)[:300]


@dataclass(frozen=True, slots=True)
class Remote:
    """A gateway to talk to."""

    url: str
    key: str | None
    timeout: float = 30.0

    @classmethod
    def resolve(
        cls, url: str | None, key: str | None, environ: Mapping[str, str] | None = None
    ) -> Remote:
        env = os.environ if environ is None else environ
        file = _file_settings(cli_config_path(env))
        found_url = url or env.get("CORRAL_URL") or file.get("url") or DEFAULT_URL
        found_key = key or env.get("CORRAL_API_KEY") or file.get("key") or None
        if not found_url.startswith(("http://", "https://")):
            fail(f"gateway URL {found_url!r} must start with http:// or https://")
        return cls(found_url.rstrip("/"), found_key)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def _check(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        hint = ""
        if resp.status_code == 401:
            hint = (
                ' (pass --key, set CORRAL_API_KEY, or put key = "..." in '
                + str(cli_config_path())
                + ")"
            )
        raise RemoteError(
            f"{resp.status_code} from {resp.request.url.path}: {_message(resp)}{hint}"
        )

    @contextmanager
    def _reaching(self, waited: float) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError:
            raise RemoteError(
                f"cannot reach the gateway at {self.url} (is `corral serve` running there?)"
            ) from None
        except httpx.TimeoutException:
            raise RemoteError(
                f"the gateway at {self.url} did not answer within {waited:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"talking to {self.url}: {exc}") from None

    def fetch(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON answer (None for an empty one). Raises
        `RemoteError`. ``timeout`` replaces the default wait for the answer (for calls
        that answer once work is done: a drain, a spawn)."""
        waited = self.timeout if timeout is None else timeout
        limit = httpx.Timeout(self.timeout, read=waited)
        with self._reaching(waited), httpx.Client(timeout=limit) as client:
            resp = client.request(
                method,
                self.url + path,
                json=body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=self._headers(),
            )
            self._check(resp)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise RemoteError(
                f"{path} answered something that is not JSON: {resp.text[:200]!r}"
            ) from None

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """`fetch`, ending the command with one error line if it fails."""
        try:
            return self.fetch(method, path, body=body, params=params, timeout=timeout)
        except RemoteError as exc:
            fail(str(exc))

    def stream(self, path: str, body: Any, *, timeout: float | None = None) -> Iterator[Any]:
        """POST, then each NDJSON line of the answer, decoded, as it arrives."""
        try:
            yield from self._stream(path, body, timeout)
        except RemoteError as exc:
            fail(str(exc))

    def _stream(self, path: str, body: Any, timeout: float | None) -> Iterator[Any]:
        limit = httpx.Timeout(self.timeout, read=timeout)
        with (
            self._reaching(self.timeout if timeout is None else timeout),
            httpx.Client(timeout=limit) as client,
            client.stream("POST", self.url + path, json=body, headers=self._headers()) as resp,
        ):
            if resp.status_code >= 400:
                resp.read()
                self._check(resp)
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    raise RemoteError(
                        f"{path} streamed a line that is not JSON: {line[:200]!r}"
                    ) from None
                if isinstance(item, dict) and "error" in item and len(item) <= 2:
                    error = item["error"]
                    raise RemoteError(
                        error.get("message", str(error)) if isinstance(error, dict) else error
                    )
                yield item
