"""Where settings come from: the YAML file, the environment, CLI overrides.

Each source becomes a `Layer`: leaf values keyed by their path in the settings tree,
plus where each path came from (``corral.yaml:12``, ``env CORRAL_PORT``, ``--port``),
so that a validation error can point at the exact line or variable to fix.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_origin

import yaml
from pydantic import BaseModel

from corral.config.errors import ConfigError
from corral.config.models import Settings

__all__ = [
    "ENV_PREFIX",
    "RESERVED_ENV",
    "SEED_ALIASES",
    "KeyPath",
    "Layer",
    "dotted",
    "env_layers",
    "env_name",
    "override_layer",
    "read_yaml",
    "setting_paths",
]

KeyPath = tuple[str | int, ...]
Shape = Literal["section", "list", "scalar"]

ENV_PREFIX = "CORRAL_"
# CORRAL_GATEWAY_URL is `corral agent`'s: a host may run the agent and the gateway.
RESERVED_ENV: frozenset[str] = frozenset(
    {
        "CORRAL_CONFIG",
        "CORRAL_ADMIN_KEY",
        "CORRAL_FLEET_TOKEN",
        "CORRAL_GATEWAY_URL",
        # The remote CLI's (corral/app/ctl/remote.py): set on a gateway host too.
        "CORRAL_URL",
        "CORRAL_API_KEY",
        "CORRAL_CLI_CONFIG",
    }
)
"""CORRAL_* names that are not settings' own names and so are not rejected as typos."""

SEED_ALIASES: Mapping[str, tuple[tuple[str, ...], ...]] = MappingProxyType(
    {
        "BACKENDS": (("backends",),),
        "SELECTION_POLICY": (("policy",),),
        "HEALTH_INTERVAL_SEC": (("health", "interval_s"),),
        "CONNECT_TIMEOUT_SEC": (("timeouts", "connect_s"),),
        # The seed had one read timeout; it bounded both the wait and the silences.
        "READ_TIMEOUT_SEC": (("timeouts", "first_byte_s"), ("timeouts", "stream_idle_s")),
        "PORT": (("port",),),
        # Not from a seed: the name `corral agent` reads its token from, so a host
        # running both sets it once. CORRAL_FLEET__TOKEN still wins.
        "CORRAL_FLEET_TOKEN": (("fleet", "token"),),
    }
)
"""Env names from the seed design, accepted below CORRAL_* in precedence."""


@dataclass
class Layer:
    values: dict[KeyPath, Any] = field(default_factory=dict)
    """Leaf values; lists are leaves, mappings are walked into."""
    origins: dict[KeyPath, str] = field(default_factory=dict)
    """Where a path came from; may also name containers and list items."""


def dotted(path: KeyPath) -> str:
    """``("backends", 1, "url")`` -> ``backends[1].url``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else part
    return out


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(path).upper()


def _shape(annotation: Any) -> Shape:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return "list" if get_origin(annotation) is list else "scalar"


def setting_paths(model: type[BaseModel] = Settings) -> Iterator[tuple[tuple[str, ...], Shape]]:
    """Every settable path under ``model``, sections included, in declaration order."""
    for key, info in model.model_fields.items():
        shape = _shape(info.annotation)
        yield (key,), shape
        if shape == "section":
            assert isinstance(info.annotation, type)
            for sub, sub_shape in setting_paths(info.annotation):
                yield (key, *sub), sub_shape


def _flatten(data: Mapping[Any, Any], prefix: KeyPath, out: dict[KeyPath, Any]) -> None:
    # An empty value is the same as leaving the key out: the layer below decides.
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, Mapping):
            _flatten(value, path, out)
        elif value is not None:
            out[path] = value


# --- the YAML file ---------------------------------------------------------------


def read_yaml(path: Path, *, named_by: str = "") -> Layer:
    """Read the settings file, remembering the line of every key and list item."""
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{label}: config file not found{named_by}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: config file is not UTF-8 text"]) from None
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read config file: {exc.strerror}"]) from None

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}" if mark else label
        column = f" (column {mark.column + 1})" if mark else ""
        raise ConfigError(
            [f"{where}: invalid YAML: {exc.problem or exc.context}{column}"]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{label}: invalid YAML: {' '.join(str(exc).split())}"]) from None
    finally:
        loader.dispose()

    if node is None or data is None:
        return Layer()
    if not isinstance(data, dict):
        line = node.start_mark.line + 1
        raise ConfigError([f"{label}:{line}: the file must be a mapping of settings (key: value)"])
    layer = Layer()
    problems: list[str] = []
    _record_lines(node, (), label, layer.origins, problems)
    if problems:
        raise ConfigError(problems)
    _flatten(data, (), layer.values)
    return layer


def _record_lines(
    node: yaml.Node, path: KeyPath, label: str, origins: dict[KeyPath, str], problems: list[str]
) -> None:
    if len(path) > 32:  # an anchor can make a node its own descendant
        line = node.start_mark.line + 1
        problems.append(f"{label}:{line}: {dotted(path[:2])}: nested too deeply")
        return
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key, line = key_node.value, key_node.start_mark.line + 1
            if (
                key_node.tag != "tag:yaml.org,2002:str"
                and key_node.tag != "tag:yaml.org,2002:merge"
            ):
                problems.append(f"{label}:{line}: {key_node.value!s:.40}: a key must be text")
                continue
            sub = (*path, key)
            if key in first_line:
                # PyYAML keeps the last silently; a repeated key is almost always a slip.
                problems.append(
                    f"{label}:{line}: {dotted(sub)}: repeated key (first on line {first_line[key]})"
                )
            first_line.setdefault(key, line)
            origins[sub] = f"{label}:{line}"
            _record_lines(value_node, sub, label, origins, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            origins[sub] = f"{label}:{item.start_mark.line + 1}"
            _record_lines(item, sub, label, origins, problems)


# --- the environment ---------------------------------------------------------------


def _env_value(shape: Shape, raw: str) -> Any:
    raw = raw.strip()
    if shape != "list":
        return raw
    if raw.startswith("["):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"starts with '[' but is not a JSON list: {exc.msg}") from None
        if not isinstance(value, list):
            raise ValueError("is not a JSON list")
        return value
    return [item.strip() for item in raw.split(",") if item.strip()]


def _unknown_env(name: str, path: tuple[str, ...], shape: Shape | None) -> str:
    if shape == "section":
        first = next(p for p, s in setting_paths() if p[:-1] == path and s != "section")
        return (
            f"env {name}: {dotted(path)} is a group of settings; "
            f"set one of them, e.g. {env_name(first)}"
        )
    known = [env_name(p) for p, s in setting_paths() if s != "section"]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"env {name}: unknown setting{hint}"


def env_layers(environ: Mapping[str, str]) -> tuple[Layer, Layer, list[str]]:
    """The seed-alias layer, the CORRAL_* layer, and problems with either."""
    shapes = dict(setting_paths())
    seed, corral, problems = Layer(), Layer(), []
    for name, paths in SEED_ALIASES.items():
        raw = environ.get(name, "")
        if not raw.strip():
            continue
        for path in paths:
            try:
                seed.values[path] = _env_value(shapes[path], raw)
            except ValueError as exc:
                problems.append(f"env {name}: {dotted(path)}: {exc}")
            seed.origins[path] = f"env {name}"
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        shape = shapes.get(path)
        if shape is None or shape == "section":
            problems.append(_unknown_env(name, path, shape))
            continue
        raw = environ[name]
        if not raw.strip():
            continue
        try:
            corral.values[path] = _env_value(shape, raw)
        except ValueError as exc:
            problems.append(f"env {name}: {dotted(path)}: {exc}")
        corral.origins[path] = f"env {name}"
    return seed, corral, problems


# --- CLI overrides -----------------------------------------------------------------


def override_layer(overrides: Mapping[str, Any]) -> Layer:
    """Structured values from CLI flags; keys may be nested mappings or dotted."""
    layer = Layer()
    for key, value in overrides.items():
        path: KeyPath = tuple(key.split("."))
        if isinstance(value, Mapping):
            _flatten(value, path, layer.values)
        elif value is not None:  # an unset flag arrives as None
            layer.values[path] = value
    for path in layer.values:
        flag = ".".join(map(str, path)).replace("_", "-")
        # The CLI's repeatable flag is singular: --backend URL --backend URL.
        layer.origins[path] = "--backend" if flag == "backends" else "--" + flag
    return layer
