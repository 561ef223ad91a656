"""Registering and deregistering backends at run time, all or nothing.

A registration is kept in two places, the store (so it survives a restart) and the
running fleet. `register` puts it in the fleet first (synchronously, so a taken name
is refused before anything is written), then writes the store row and its audit event
in one transaction; if that fails the fleet lets go of it again. `deregister` removes
the row (with its audit event) first and then takes the backend out of the fleet,
where its running requests still finish.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from corral.adapters.engine_probe import check_engine
from corral.adapters.store.backends import backend_options, deregister_backend, register_backend
from corral.app.admin.audit import audit_action
from corral.app.admin.deps import Actor
from corral.config.models import BackendConfig
from corral.core.errors import Conflict, InvalidField, NotFound, Unavailable
from corral.core.types import BackendState

if TYPE_CHECKING:
    from corral.adapters.store.db import Store
    from corral.app.gateway import Gateway

__all__ = ["backend_state", "deregister", "register", "store_of"]

log = logging.getLogger("corral.admin")

_MANAGED_BY = {
    "config": "the config file (change it there, or PUT /admin/config/backends)",
    "agent": "its node agent (stop the agent, or see /admin/nodes)",
    "worker": "the worker pool (prune it through /admin/workers)",
    "demo": "the demo fleet (it goes when `corral serve --demo` stops; disable it instead)",
}


def store_of(gw: Gateway) -> Store:
    if gw.store is None:
        raise Unavailable("the store is not open (the gateway is starting or stopping)")
    return gw.store


def backend_state(gw: Gateway, name: str) -> BackendState:
    state = gw.fleet.backends.get(name)
    if state is None:
        known = ", ".join(sorted(gw.fleet.backends)) or "none"
        raise NotFound(f"no backend named {name!r} (known: {known})", param="name")
    return state


async def register(gw: Gateway, actor: Actor, config: BackendConfig) -> BackendState:
    """Probe ``config.url``, then add the backend to the store and the fleet."""
    store = store_of(gw)
    if config.name in gw.fleet.backends:
        raise Conflict(f"backend {config.name!r} already exists", param="name")
    check = await check_engine(
        config.url,
        config.kind,
        timeout=gw.settings.health.timeout_s,
        connect_timeout=gw.settings.timeouts.connect_s,
    )
    if not check.ok:
        raise InvalidField(check.detail, param="url")
    state = gw.add_backend(config, origin="registered")  # Conflict if one joined meanwhile
    try:
        await register_backend(
            store,
            config.url,
            name=config.name,
            kind=config.kind,
            options=backend_options(config),
            created_by=actor.name,
            actor=actor.name,
        )
    except BaseException:
        await gw.remove_backend(config.name)
        raise
    log.info(
        "backend %s registered by %s: %s at %s", config.name, actor.name, check.detail, config.url
    )
    await gw.fleet.probe(config.name)
    return state


async def deregister(gw: Gateway, actor: Actor, name: str) -> BackendState:
    """Remove a registered backend from the store and the fleet; what it was."""
    state = backend_state(gw, name)
    if state.origin != "registered":
        owner = _MANAGED_BY.get(state.origin, f"its origin ({state.origin})")
        raise Conflict(
            f"backend {name!r} was not registered through the admin API: it is managed by "
            f"{owner}; disable or drain it to stop its traffic now",
            param="name",
        )
    try:
        await deregister_backend(store_of(gw), name, actor=actor.name)
    except NotFound:
        # In the fleet but not in the store (removed there by hand): still let it go.
        await audit_action(gw, actor, "backend.deregister", name, before={"url": state.url})
    await gw.remove_backend(name)
    log.info(
        "backend %s deregistered by %s (%d in flight finish)", name, actor.name, state.in_flight
    )
    return state
