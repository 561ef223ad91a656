"""load_settings: defaults < YAML file < seed env aliases < CORRAL_* env < CLI overrides."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from corral.config.errors import ConfigError
from corral.config.models import DEFAULT_POLICIES, BackendConfig, Settings
from corral.config.sources import KeyPath, Layer, dotted, env_layers, override_layer, read_yaml

__all__ = ["dump_yaml", "load_settings", "parse_backend"]


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    known_policies: Iterable[str] = DEFAULT_POLICIES,
) -> Settings:
    """Build the settings from every source, or raise ConfigError listing all problems.

    ``environ`` defaults to ``os.environ``; ``config_file`` defaults to env
    ``CORRAL_CONFIG``. ``overrides`` come from CLI flags: keys are setting names,
    nested mappings or dotted (``"timeouts.connect_s"``); None values are ignored,
    so unset flags can be passed straight through.
    """
    env = os.environ if environ is None else environ
    named_by = ""
    if config_file is None and env.get("CORRAL_CONFIG", "").strip():
        config_file = Path(env["CORRAL_CONFIG"].strip())
        named_by = " (named by env CORRAL_CONFIG)"
    file_layer = read_yaml(config_file, named_by=named_by) if config_file else Layer()
    seed_layer, corral_layer, problems = env_layers(env)
    values, origins = _merge(
        [file_layer, seed_layer, corral_layer, override_layer(overrides or {})]
    )
    context = {"known_policies": tuple(known_policies)}
    try:
        settings = Settings.model_validate(_nest(values), context=context)
    except ValidationError as exc:
        problems.extend(_explain(exc, origins))
    if problems:
        raise ConfigError(problems)
    return settings


def parse_backend(spec: str) -> BackendConfig:
    """``[name=][ollama+|openai+]http(s)://host:port[/path]`` -> BackendConfig."""
    try:
        return BackendConfig.model_validate(spec)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, {(): f"backend {spec!r}"})) from None


def dump_yaml(settings: Settings) -> str:
    """Every setting, defaults included, as YAML that load_settings reads back."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _merge(layers: Sequence[Layer]) -> tuple[dict[KeyPath, Any], dict[KeyPath, str]]:
    """Stack layers, lowest first; a higher leaf replaces everything it overlaps."""
    values: dict[KeyPath, Any] = {}
    origins: dict[KeyPath, str] = {}
    for layer in layers:
        for path, value in layer.values.items():
            n = len(path)
            for old in [p for p in values if p[:n] == path or path[: len(p)] == p]:
                del values[old]
            # Line numbers inside a list the file set are stale once env replaces it.
            for old in [p for p in origins if len(p) > n and p[:n] == path]:
                del origins[old]
            values[path] = value
        origins.update(layer.origins)
    return values, origins


def _nest(values: Mapping[KeyPath, Any]) -> dict[Any, Any]:
    root: dict[Any, Any] = {}
    for path, value in values.items():
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return root


def _explain(exc: ValidationError, origins: Mapping[KeyPath, str]) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        if err["type"] == "default_factory_not_called":
            continue  # a consequence of another error already listed
        loc: KeyPath = tuple(p for p in err["loc"] if isinstance(p, str | int))
        where = next((origins[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in origins), "")
        parts = [where, dotted(loc), _describe(err, loc)]
        problems.append(": ".join(p for p in parts if p))
    return problems


def _describe(err: ErrorDetails, loc: KeyPath) -> str:
    kind, value = err["type"], err["input"]
    if kind == "extra_forbidden":
        known = list(_model_at(loc[:-1]).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"expected one of: {', '.join(known)}"
        return f"unknown setting ({hint})"
    if kind == "missing":
        return "required"
    text = err["msg"].removeprefix("Value error, ")
    if text[:2].istitle():
        text = text[0].lower() + text[1:]
    if _is_secret(loc):
        return text  # never echo a secret into logs and terminals
    if isinstance(value, str | int | float) and len(repr(value)) <= 80:
        text += f" (got {value!r})"
    return text


def _is_secret(loc: KeyPath) -> bool:
    if not loc or not isinstance(loc[-1], str):
        return False
    info = _model_at(loc[:-1]).model_fields.get(loc[-1])
    annotation = info.annotation if info is not None else None
    return annotation is not None and SecretStr in (annotation, *get_args(annotation))


def _model_at(loc: KeyPath) -> type[BaseModel]:
    model: type[BaseModel] = Settings
    for key in loc:
        info = model.model_fields.get(key) if isinstance(key, str) else None
        inner = getattr(info.annotation, "__args__", (info.annotation,)) if info else ()
        model = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), model)
    return model
