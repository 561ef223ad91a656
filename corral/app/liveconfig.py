"""Changing the settings of a running gateway: what applies at once, what waits.

A change is validated as a whole `Settings` first (so it is one the gateway could
have started with) and then applied: `gw.settings` becomes the new value, and the
parts of the gateway built from the old one are told. Which settings apply live:

- read per request already: ``timeouts`` (but ``connect_s``), ``limits``,
  ``structured``, ``tenants``;
- pushed into the running parts: ``log_level``, ``log_buffer``, ``health``, ``queue``,
  ``retry``, ``routing.keep_alive_s``, ``breakers`` (but ``enabled``);
- ``backends``: the config file's backends are added, removed, replaced (new URL or
  kind) or updated in place, the others (registered, agents, workers) untouched.

Everything else (host, port, the store, auth, CORS, images, logical models, the
routing policy, usage, ``timeouts.connect_s``, ``breakers.enabled``) is built once at
start and waits for a restart; `restart_needed` lists what differs from the start.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from corral.config import DEFAULT_POLICIES, Settings
from corral.config.models import BackendConfig
from corral.config.sources import dotted
from corral.core.errors import Conflict, InvalidField

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = [
    "LIVE",
    "RESTART_ONLY",
    "SettingsChange",
    "apply_settings",
    "changed_paths",
    "is_live",
    "restart_needed",
    "validate_settings",
]

log = logging.getLogger("corral.config")

LIVE: tuple[str, ...] = (
    "log_level",
    "log_buffer",
    "backends",
    "health",
    "timeouts",
    "queue",
    "retry",
    "limits",
    "structured",
    "tenants",
    "routing.keep_alive_s",
    "breakers",
)
"""Settings (and sections) that apply to the running gateway when changed."""

RESTART_ONLY: tuple[str, ...] = ("timeouts.connect_s", "breakers.enabled")
"""Exceptions inside live sections: built into objects made at start."""


def is_live(path: str) -> bool:
    def under(prefix: str) -> bool:
        return path == prefix or path.startswith(prefix + ".")

    return any(under(p) for p in LIVE) and not any(under(p) for p in RESTART_ONLY)


def _diff(old: Any, new: Any, prefix: str, out: list[str]) -> None:
    # The top level and each section are walked; anything deeper is one value.
    if isinstance(old, dict) and isinstance(new, dict) and "." not in prefix:
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            _diff(old.get(key), new.get(key), path, out)
    elif old != new:
        out.append(prefix)


def changed_paths(old: Settings, new: Settings) -> list[str]:
    """Dotted paths whose values differ: sections are walked one level (``queue.
    max_waiting``), lists and mappings inside them count as one value."""
    out: list[str] = []
    # Python mode: secrets (SecretStr) compare by value, where JSON would mask them.
    _diff(old.model_dump(), new.model_dump(), "", out)
    return out


def restart_needed(gw: Gateway) -> list[str]:
    """Settings changed since start that take effect only at the next start."""
    return [p for p in changed_paths(gw.started_settings, gw.settings) if not is_live(p)]


def validate_settings(data: dict[str, Any], *, where: str = "") -> Settings:
    """``data`` as Settings, or `InvalidField` naming each bad field (dotted)."""
    try:
        return Settings.model_validate(data, context={"known_policies": DEFAULT_POLICIES})
    except ValidationError as exc:
        problems = []
        first = where or "config"
        for i, err in enumerate(exc.errors(include_url=False)):
            if err["type"] == "default_factory_not_called":
                continue  # a consequence of another error listed
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            name = dotted(loc) or where or "config"
            if i == 0:
                first = name
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise InvalidField("; ".join(problems), param=first) from None


@dataclass
class SettingsChange:
    changed: list[str] = field(default_factory=list)
    applied_live: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    backends_added: list[str] = field(default_factory=list)
    backends_removed: list[str] = field(default_factory=list)
    backends_updated: list[str] = field(default_factory=list)


@dataclass
class _BackendPlan:
    add: list[BackendConfig] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    update: list[BackendConfig] = field(default_factory=list)


def _plan_backends(gw: Gateway, old: Settings, new: Settings) -> _BackendPlan:
    """What the new backends list does to the fleet; `Conflict` (before anything
    changes) when it names a backend that came from elsewhere."""
    fleet = gw.fleet.backends
    mine = {b.name: b for b in old.backends if b.name in fleet and fleet[b.name].origin == "config"}
    plan = _BackendPlan()
    for i, b in enumerate(new.backends):
        other = fleet.get(b.name)
        if other is not None and b.name not in mine:
            raise Conflict(
                f"backends[{i}]: {b.name!r} is already a backend ({other.origin}); "
                "give this one another name",
                param=f"backends[{i}].name",
            )
        was = mine.get(b.name)
        if was is None:
            plan.add.append(b)
        elif (was.url, was.kind) != (b.url, b.kind):
            plan.remove.append(b.name)
            plan.add.append(b)
        elif was.model_dump() != b.model_dump():
            plan.update.append(b)
    names = {b.name for b in new.backends}
    plan.remove += [name for name in mine if name not in names]
    return plan


async def _apply_backends(gw: Gateway, plan: _BackendPlan) -> None:
    for name in plan.remove:
        await gw.remove_backend(name)
    for b in plan.update:
        state = gw.fleet.backends[b.name]
        state.max_per_model = b.max_per_model
        state.vram_bytes = int(b.vram_gb * 1024**3) if b.vram_gb is not None else None
        state.max_loaded_models = b.max_loaded_models
        state.tags, state.labels = tuple(b.tags), dict(b.labels)
        if state.enabled != b.enabled:
            gw.fleet.set_enabled(b.name, b.enabled)
        gw.fleet.set_capacity(b.name, max_concurrency=b.max_concurrency, weight=b.weight)
    added = []
    for b in plan.add:
        try:
            gw.add_backend(b, origin="config")
        except Conflict as exc:  # registered under that name since the plan was made
            log.error("config backend %s not added: %s", b.name, exc.message)
            continue
        added.append(b.name)
    if added:
        await asyncio.gather(*(gw.fleet.probe(name) for name in added))


def _push(gw: Gateway, new: Settings, changed: list[str]) -> None:
    """Tell the parts built from the old settings about the new ones."""
    from corral.app.gateway import breaker_config, retry_policy

    sections = {p.split(".")[0] for p in changed}
    fleet = gw.fleet
    if "log_level" in sections:
        logging.getLogger().setLevel(new.log_level.upper())
    if "log_buffer" in sections:
        gw.logs.resize(new.log_buffer)
    if sections & {"health", "queue"}:
        fleet.retime(
            probe_interval=new.health.interval_s,
            probe_timeout=new.health.timeout_s,
            models_refresh=new.health.models_refresh_s,
            queue_timeout=new.queue.timeout_s,
            retry_after=new.queue.retry_after_s,
        )
    if "queue" in sections:
        queue = fleet.scheduler.queue
        queue.max_waiting = new.queue.max_waiting
        queue.max_per_tenant = new.queue.max_per_tenant
        queue.aging_s = new.queue.aging_s
    if "retry" in sections:
        gw.retry_policy = retry_policy(new)
    if "routing.keep_alive_s" in changed:
        fleet.scheduler.keep_alive_s = new.routing.keep_alive_s
    if "breakers" in sections and fleet.breakers is not None:
        fleet.breakers.config = breaker_config(new)


async def apply_settings(gw: Gateway, new: Settings) -> SettingsChange:
    """Make ``new`` the gateway's settings and apply what can be applied live."""
    old = gw.settings
    changed = changed_paths(old, new)
    change = SettingsChange(changed=changed)
    change.applied_live = [p for p in changed if is_live(p)]
    change.needs_restart = [p for p in changed if not is_live(p)]
    plan = _plan_backends(gw, old, new) if "backends" in changed else _BackendPlan()
    gw.settings = new
    _push(gw, new, changed)
    await _apply_backends(gw, plan)
    change.backends_added = [b.name for b in plan.add]
    change.backends_removed = list(plan.remove)
    change.backends_updated = [b.name for b in plan.update]
    if changed:
        log.info(
            "settings changed: %s%s",
            ", ".join(changed),
            f" (at the next start: {', '.join(change.needs_restart)})"
            if change.needs_restart
            else "",
        )
    return change
