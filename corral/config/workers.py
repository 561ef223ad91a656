"""Settings of spawned workers: engine processes the gateway starts, scales and stops.

A worker is started from a command template (``{port}``, ``{gpu}``, ... filled in per
worker), joins the fleet once its engine answers and holds the required models, and
is pruned when idle. The templates are checked here, at load time, so a typo in a
placeholder is a configuration error rather than a worker that never starts.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from corral.config.base import Seconds, _Section

__all__ = ["PLACEHOLDERS", "WorkersConfig", "fill_template"]

PLACEHOLDERS: tuple[str, ...] = ("port", "gpu", "id", "host", "python")
"""What a command or env template may name: ``{port}``, ``{gpu}``, ``{id}``, ``{host}``
(the address the worker should listen on) and ``{python}`` (the gateway's interpreter)."""

_FIELD_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced; other braces (JSON, say) stay as written."""
    return _FIELD_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _named(template: str) -> set[str]:
    return set(_FIELD_RE.findall(template))


def _parse_env(value: Any) -> Any:
    """``{NAME: template}``, or ``NAME=template`` items (a list, or comma-separated text
    as an environment variable gives them)."""
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"{item!r} is not NAME=VALUE")
            name, _, text = item.partition("=")
            out[name.strip()] = text.strip()
        return out
    return value


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class WorkersConfig(_Section):
    """Engine processes Corral starts on demand and adds to the fleet (docs/workers.md)."""

    provider: Literal["process"] = Field(
        default="process", description="How workers are started: process (a local command)."
    )
    command: str = Field(
        default="",
        description="Command template that starts one engine, with {port}, {gpu}, {id}, "
        "{host}, {python}; empty = no workers.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment templates for the command, e.g. OLLAMA_HOST: '{host}:{port}'.",
    )
    kind: Literal["ollama", "openai"] = Field(
        default="ollama", description="API dialect of the engine the command starts."
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the gateway reaches workers at ({host} in templates).",
    )
    gpus: list[str] = Field(
        default_factory=list, description="GPU ids handed out round-robin as {gpu}."
    )
    ports: str = Field(
        default="", description="Port range for workers, e.g. 21000-21099; empty = any free port."
    )
    min: int = Field(default=0, ge=0, description="Workers kept running at all times.")
    max: int = Field(default=4, ge=1, description="Most workers at once.")
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight per worker; unset = the kind's backend default.",
    )
    models: list[str] = Field(
        default_factory=list,
        description="Models a new worker must hold before it serves (pulled on Ollama); a "
        "request for one that no backend holds starts a worker (scale from zero).",
    )
    ready_timeout_s: Seconds = Field(
        default=120.0, description="Longest a new worker may take to answer and pull its models."
    )
    autoscale: bool = Field(
        default=True, description="Add workers under queueing and prune idle ones."
    )
    scale_up_queue: int = Field(
        default=4, ge=1, description="Waiting requests that call for one more worker."
    )
    scale_up_wait_s: Seconds = Field(
        default=10.0, description="A request waiting this long calls for one more worker."
    )
    idle_s: Seconds = Field(default=300.0, description="Idle time after which a worker is pruned.")
    cooldown_s: float = Field(
        default=60.0, ge=0, description="Least time between two scaling actions."
    )
    interval_s: Seconds = Field(default=5.0, description="How often the autoscaler looks.")
    drain_timeout_s: Seconds = Field(
        default=60.0, description="Longest a pruned worker may take to finish its requests."
    )
    stop_timeout_s: Seconds = Field(
        default=10.0, description="Time between SIGTERM and SIGKILL when a worker stops."
    )
    unhealthy_s: float = Field(
        default=60.0,
        ge=0,
        description="A ready worker whose health checks have failed this long (it runs but "
        "does not answer) is stopped, counted as failed, and replaced if below min; 0 = never.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.command)

    @property
    def port_range(self) -> tuple[int, int] | None:
        """The configured (first, last) ports, or None for any free port."""
        if not self.ports:
            return None
        first, _, last = self.ports.partition("-")
        return int(first), int(last or first)

    def argv(self) -> list[str]:
        """The command split into arguments, templates still unfilled."""
        return shlex.split(self.command)

    @field_validator("env", mode="before")
    @classmethod
    def _env_items(cls, value: Any) -> Any:
        value = _parse_env(value)
        if isinstance(value, dict):  # YAML reads OLLAMA_NUM_PARALLEL: 4 as a number
            return {k: _text(v) for k, v in value.items()}
        return value

    @field_validator("gpus", "models", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        # YAML reads gpus: [0, 1] as numbers; they are ids.
        return [_text(v) for v in value] if isinstance(value, list) else value

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return env

    @field_validator("command")
    @classmethod
    def _command_splits(cls, command: str) -> str:
        command = command.strip()
        try:
            shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments: {exc}") from None
        return command

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, ports: str) -> str:
        ports = ports.strip()
        if not ports:
            return ports
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", ports)
        if match is None:
            raise ValueError("must be FIRST-LAST, e.g. 21000-21099")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if not 1 <= first <= last <= 65535:
            raise ValueError("must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535")
        return f"{first}-{last}"

    @field_validator("gpus", "models")
    @classmethod
    def _no_blank_items(cls, items: list[str]) -> list[str]:
        out = [item.strip() for item in items]
        for i, item in enumerate(out):
            if not item or any(c.isspace() for c in item):
                raise ValueError(f"item {i} {item!r} must be non-empty, without spaces")
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if not self.command:
            if self.min:
                raise ValueError("min needs a command to start workers with")
            return self
        used = _named(self.command).union(*(_named(v) for v in self.env.values()))
        unknown = sorted(used - set(PLACEHOLDERS))
        if unknown:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: {known})")
        if "port" not in used:
            raise ValueError(
                "command (or an env value) must carry {port}, or every worker would "
                "listen on the same port"
            )
        if "gpu" in used and not self.gpus:
            raise ValueError("{gpu} is used but gpus is empty; list the GPU ids, e.g. [0, 1]")
        span = self.port_range
        if span is not None and span[1] - span[0] + 1 < self.max:
            raise ValueError(
                f"ports {self.ports} holds {span[1] - span[0] + 1} ports, fewer than max "
                f"({self.max})"
            )
        return self
