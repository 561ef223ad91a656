"""Corral's settings: typed models and the layered loader that fills them.

    from corral.config import load_settings
    settings = load_settings(Path("corral.yaml"), overrides={"port": 9000})

Sources, highest precedence first: ``overrides`` (CLI flags), ``CORRAL_*`` env vars,
the seed design's env names (``BACKENDS``, ``PORT``, ...), the YAML file, defaults.
Every problem is reported at once in a ConfigError, each naming the dotted key and
where the bad value came from. docs/configuration.md lists every setting.

Sits above ``corral.core`` and below adapters and the app; imports nothing else
from corral.
"""

from __future__ import annotations

from corral.config.errors import ConfigError
from corral.config.loader import ConfigSource, dump_yaml, load_settings, parse_backend
from corral.config.models import (
    DEFAULT_POLICIES,
    BackendConfig,
    BackendKind,
    CorsConfig,
    HealthConfig,
    LimitsConfig,
    LogLevel,
    QueueConfig,
    RetryConfig,
    Settings,
    TimeoutsConfig,
)
from corral.config.sources import RESERVED_ENV, SEED_ALIASES

__all__ = [
    "DEFAULT_POLICIES",
    "RESERVED_ENV",
    "SEED_ALIASES",
    "BackendConfig",
    "BackendKind",
    "ConfigError",
    "ConfigSource",
    "CorsConfig",
    "HealthConfig",
    "LimitsConfig",
    "LogLevel",
    "QueueConfig",
    "RetryConfig",
    "Settings",
    "TimeoutsConfig",
    "dump_yaml",
    "load_settings",
    "parse_backend",
]
