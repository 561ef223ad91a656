"""Settings of authentication: when API keys are required, how often the key cache reloads."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field

from corral.config.base import Seconds, _Section

__all__ = ["AuthConfig", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class AuthConfig(_Section):
    """API keys: `auto` requires them whenever the gateway listens beyond loopback."""

    mode: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto = keys required unless host is a loopback address; on; off.",
    )
    allow_open: bool = Field(
        default=False,
        description="Let mode off stand on a non-loopback host (anyone reaching it may use it).",
    )
    reload_s: Seconds = Field(
        default=5.0,
        description="How often the key cache reloads from the store (CLI-made changes arrive).",
    )

    def required(self, host: str) -> bool:
        """Whether requests must bear a key when listening on ``host``."""
        if self.mode == "auto":
            return not is_loopback(host)
        return self.mode == "on"
