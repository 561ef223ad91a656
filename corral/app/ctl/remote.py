"""Where the gateway is and who we are to it; one HTTP call, or one clear error line.

The URL and key come from, first to last: ``--url``/``--key``, the environment
(``CORRAL_URL``, ``CORRAL_API_KEY``), the file ``$XDG_CONFIG_HOME/corral/config.toml``
(default ``~/.config/corral/config.toml``; ``CORRAL_CLI_CONFIG`` names another) with
top-level ``url = "..."`` and ``key = "..."``, then ``http://127.0.0.1:8088`` and no key.

Every failure — the gateway unreachable, a refusal, a malformed answer — ends the
command with one ``error: ...`` line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

__all__ = [
    "DEFAULT_URL",
    "JsonOpt",
    "KeyOpt",
    "Remote",
    "UrlOpt",
    "cli_config_path",
    "fail",
]

DEFAULT_URL = "http://127.0.0.1:8088"

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The gateway's base URL (env CORRAL_URL; config file `url`) "
        f"[default: {DEFAULT_URL}].",
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


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


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
        fail(f"{resp.status_code} from {resp.request.url.path}: {_message(resp)}{hint}")

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError:
            fail(f"cannot reach the gateway at {self.url} (is `corral serve` running there?)")
        except httpx.TimeoutException:
            fail(f"the gateway at {self.url} did not answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            fail(f"talking to {self.url}: {exc}")

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """One request; the decoded JSON answer (None for an empty one)."""
        with self._reaching(), httpx.Client(timeout=self.timeout) as client:
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
            fail(f"{path} answered something that is not JSON: {resp.text[:200]!r}")

    def stream(self, path: str, body: Any, *, timeout: float | None = None) -> Iterator[Any]:
        """POST, then each NDJSON line of the answer, decoded, as it arrives."""
        limit = httpx.Timeout(self.timeout, read=timeout)
        with (
            self._reaching(),
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
                    fail(f"{path} streamed a line that is not JSON: {line[:200]!r}")
                if isinstance(item, dict) and "error" in item and len(item) <= 2:
                    error = item["error"]
                    fail(error.get("message", str(error)) if isinstance(error, dict) else error)
                yield item
