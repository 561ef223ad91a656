"""Every admin action is audited: who, what, on what, and the record before and after.

Changes that live in the store record their event inside the same transaction
(``corral.adapters.store.audit.insert_audit``), so a change never lands without its
audit row or the other way round. Changes to the running gateway only (drain, pause,
a breaker cleared) use `audit_action` once they took effect.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from corral.adapters.store.audit import add_audit
from corral.app.admin.deps import Actor

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["audit_action"]

log = logging.getLogger("corral.audit")


async def audit_action(
    gw: Gateway,
    actor: Actor,
    action: str,
    target: str = "",
    *,
    before: Any = None,
    after: Any = None,
) -> None:
    """Record an admin action that changed the running gateway (not the store)."""
    log.info("admin %s: %s %s", actor.name, action, target)
    if gw.store is None:
        return
    await add_audit(gw.store, actor.name, action, target, before=before, after=after)
