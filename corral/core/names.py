"""Model names as Ollama reads them, and hosts as URLs carry them."""

from __future__ import annotations

__all__ = ["normalize_model", "url_host"]


def normalize_model(name: str) -> str:
    """Return ``name`` with ``:latest`` added when it carries no tag, as Ollama does.

    The tag is what follows the last ``:`` after the last ``/``; a colon before a
    slash belongs to a registry host (``host:5000/ns/model``).
    """
    name = name.strip()
    if not name:
        return name
    slash = name.rfind("/")
    if name.find(":", slash + 1) == -1:
        return name + ":latest"
    return name


def url_host(host: str) -> str:
    """``host`` as it goes in a URL: an IPv6 address in brackets, anything else as is."""
    return f"[{host}]" if ":" in host else host
