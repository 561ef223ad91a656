"""Answers that speak for the whole fleet: its merged model list and their headers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from corral.app.gateway import Gateway
from corral.app.pipeline import request_id
from corral.core.types import BackendState

__all__ = ["fleet_headers", "fleet_models", "ollama_tag"]


def fleet_headers(request: Request, backends: list[BackendState]) -> dict[str, str]:
    """Headers of an answer that speaks for several backends (or none)."""
    return {
        "X-Corral-Request-Id": request_id(request.scope),
        "X-Corral-Backend": ",".join(b.name for b in backends) or "none",
    }


def fleet_models(gw: Gateway) -> tuple[dict[str, dict[str, Any]], list[BackendState]]:
    """One entry per model (normalized name) over every healthy backend, first seen wins."""
    merged: dict[str, dict[str, Any]] = {}
    backends = gw.fleet.routable()
    models = gw.fleet.models
    for b in backends:
        for key, entry in gw.fleet.tag_entries.get(b.name, {}).items():
            if key in merged or not models.listed(key):
                continue
            logical = models.model(key)
            # A logical model is listed under its configured name, whatever the
            # backend calls it.
            merged[key] = _renamed(entry, logical.name) if logical is not None else entry
    return merged, backends


def _renamed(entry: dict[str, Any], name: str) -> dict[str, Any]:
    if "id" in entry:
        return {**entry, "id": name}
    return {**entry, "name": name, "model": name}


def ollama_tag(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """An /api/tags entry; OpenAI-kind backends' models get one made from their id."""
    if "id" not in entry:
        return entry
    model_id = entry["id"]
    return {
        "name": model_id,
        "model": model_id,
        "modified_at": "1970-01-01T00:00:00Z",
        "size": 0,
        "digest": "",
        "details": {
            "parent_model": "",
            "format": "",
            "family": "",
            "families": None,
            "parameter_size": "",
            "quantization_level": "",
        },
    }
