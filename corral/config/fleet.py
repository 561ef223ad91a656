"""Settings of the node registry: how node agents join, and when a silent one is let go."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from corral.config.base import Seconds, _Section

__all__ = [
    "FLEET_TOKEN_HEADER",
    "FLEET_TOKEN_MIN",
    "NODE_ID_PATTERN",
    "FleetConfig",
    "check_fleet_token",
]

NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
"""A node id names its backend and is a URL path segment: no spaces, commas, '=' or '/'."""

FLEET_TOKEN_HEADER = "X-Corral-Fleet-Token"
"""The header that carries the fleet token to a node agent's relay (and, like
``Authorization: Bearer``, to the heartbeat routes)."""

FLEET_TOKEN_MIN = 16
"""Shortest fleet token accepted: it lets a machine put itself in front of users' prompts."""

# Printable ASCII without spaces: the token travels in an HTTP header.
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")


def check_fleet_token(token: str) -> str:
    """The token itself, or ValueError saying what is wrong with it."""
    if len(token) < FLEET_TOKEN_MIN:
        raise ValueError(
            f"must be at least {FLEET_TOKEN_MIN} characters (e.g. the output of "
            "`openssl rand -hex 32`)"
        )
    if not _TOKEN_RE.match(token):
        raise ValueError("must be printable ASCII without spaces (it is sent as a header)")
    return token


class FleetConfig(_Section):
    """Node agents (`corral agent`): the token they join with, and their timeouts."""

    token: SecretStr | None = Field(
        default=None,
        description="The fleet token agents must present; unset (and no token_file) = "
        "agents are refused.",
    )
    token_file: Path | None = Field(
        default=None, description="A file holding the fleet token (read at start)."
    )
    offline_after_s: Seconds = Field(
        default=30.0,
        description="A node whose agent is silent this long is offline: no traffic "
        "until it heartbeats again (about three agent intervals).",
    )
    remove_after_s: Seconds = Field(
        default=600.0, description="A node silent this long is removed from the fleet."
    )
    degraded_after_failures: int = Field(
        default=3,
        ge=1,
        description="Failed probes or connections in a row that mark a node degraded.",
    )

    @field_validator("token")
    @classmethod
    def _check_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None:
            check_fleet_token(token.get_secret_value())
        return token

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        if self.remove_after_s < self.offline_after_s:
            raise ValueError(
                f"remove_after_s ({self.remove_after_s:g}) is below offline_after_s "
                f"({self.offline_after_s:g})"
            )
        return self
