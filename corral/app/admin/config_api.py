"""``/admin/config``: the running settings, their schema, changes at run time, reload, save.

What applies live and what waits for a restart is decided in corral/app/liveconfig.py;
every answer that changes something says which was which.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from fastapi import APIRouter, Body, Depends
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from corral.app.admin.audit import audit_action
from corral.app.admin.deps import Actor, requires
from corral.app.admin.openapi import refusals
from corral.app.liveconfig import (
    LIVE,
    RESTART_ONLY,
    SettingsChange,
    apply_settings,
    restart_needed,
    validate_settings,
)
from corral.config import ConfigError, Settings
from corral.core.errors import BadRequest, Conflict, InvalidField

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["plain", "redact", "router", "write_atomically"]

SECTIONS: tuple[str, ...] = tuple(Settings.model_fields)


def redact(data: dict[str, Any]) -> dict[str, Any]:
    """The settings (a JSON dump, which masks ``fleet.token`` already) with the
    password in ``database_url`` masked too."""
    url = data.get("database_url")
    if isinstance(url, str):
        try:
            data = {**data, "database_url": make_url(url).render_as_string(hide_password=True)}
        except ArgumentError:
            data = {**data, "database_url": "***"}
    return data


def plain(value: Any) -> Any:
    """A settings dump (Python mode) as plain YAML-safe values, secrets revealed: what
    the config file must hold to load the same settings."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    return value


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a crash leaves the old file or the
    new one, never half of either. Keeps the old file's permissions (else 0600)."""
    path = path.expanduser()
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


class ConfigView(BaseModel):
    config: dict[str, Any] = Field(
        description="Every setting the gateway runs with, defaults included; secrets masked."
    )
    file: str | None = Field(
        description="The config file it was started from (reload reads it, save writes it)."
    )
    restart_needed: list[str] = Field(
        description="Settings changed since start that take effect at the next start."
    )
    live: list[str] = Field(description="Settings and sections that apply when changed.")
    restart_only: list[str] = Field(description="Exceptions inside live sections.")


class ConfigChange(BaseModel):
    changed: list[str] = Field(description="Settings whose value changed (dotted).")
    applied_live: list[str] = Field(description="Of those, the ones in effect now.")
    needs_restart: list[str] = Field(
        description="Of those, the ones in effect only after a restart."
    )
    backends_added: list[str] = Field(description="Config backends that joined the fleet.")
    backends_removed: list[str] = Field(description="Config backends that left it.")
    backends_updated: list[str] = Field(description="Config backends changed in place.")
    value: Any = Field(description="The section's value now (secrets masked); null on reload.")


class Saved(BaseModel):
    file: str = Field(description="The file written.")
    bytes: int = Field(description="Its size.")


def _change(change: SettingsChange, value: Any) -> ConfigChange:
    return ConfigChange(
        changed=change.changed,
        applied_live=change.applied_live,
        needs_restart=change.needs_restart,
        backends_added=change.backends_added,
        backends_removed=change.backends_removed,
        backends_updated=change.backends_updated,
        value=value,
    )


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(prefix="/admin/config", tags=["config"])
    admin = Depends(requires(gw, "admin"))
    lock = asyncio.Lock()  # one change at a time: each is validated against the last

    def current(section: str | None = None) -> Any:
        data = redact(gw.settings.model_dump(mode="json"))
        return data if section is None else data.get(section)

    def source_file() -> Path | None:
        return gw.config_source.path if gw.config_source is not None else None

    @api.get("", response_model=ConfigView, summary="The running settings")
    async def get_config(_: Actor = admin) -> ConfigView:
        """Every setting as the gateway runs with it (secrets masked), where it came from,
        and what was changed since start but waits for a restart."""
        path = source_file()
        return ConfigView(
            config=current(),
            file=str(path) if path is not None else None,
            restart_needed=restart_needed(gw),
            live=list(LIVE),
            restart_only=list(RESTART_ONLY),
        )

    @api.get("/schema", summary="The settings' JSON schema")
    async def schema(_: Actor = admin) -> dict[str, Any]:
        """The JSON schema of the whole settings tree (types, bounds, descriptions)."""
        return Settings.model_json_schema(mode="validation")

    @api.put("/{section}", response_model=ConfigChange, summary="Change one section")
    async def put_section(
        section: Annotated[
            str,
            PathParam(
                description="A top-level setting or section, e.g. queue.",
                json_schema_extra={"enum": list(SECTIONS)},
            ),
        ],
        value: Annotated[Any, Body(description="The section's new value, whole.")] = None,
        actor: Actor = admin,
    ) -> ConfigChange:
        """Replace one top-level setting or section (fields left out take their defaults;
        null unsets it). Checked as the whole settings would be; a bad value is a 400
        naming the field and nothing changes. Applied at once where the gateway can;
        the answer says which settings wait for a restart."""
        if section not in SECTIONS:
            raise InvalidField(
                f"unknown config section {section!r}; known: {', '.join(SECTIONS)}",
                param="section",
            )
        async with lock:
            # Python mode keeps secrets as they are (JSON would mask them).
            data = gw.settings.model_dump(exclude_unset=True)
            before = redact(gw.settings.model_dump(mode="json")).get(section)
            if value is None:
                data.pop(section, None)
            else:
                data[section] = value
            new = validate_settings(data, where=section)
            change = await apply_settings(gw, new)
            after = current(section)
            await audit_action(
                gw,
                actor,
                "config.update",
                section,
                before={"value": before},
                after={"value": after, "needs_restart": change.needs_restart},
            )
        return _change(change, after)

    @api.post(
        "/reload",
        response_model=ConfigChange,
        summary="Reload the config",
        responses=refusals(
            {
                400: "The config does not load; the message lists its problems.",
                409: "The gateway was given its settings directly: nothing to reload from.",
            }
        ),
    )
    async def reload(actor: Actor = admin) -> ConfigChange:
        """Read the config file, the environment and the command-line flags the gateway
        started from again and apply the result like a change (run-time changes not
        saved are lost). A file that does not load is a 400 listing its problems, and
        nothing changes."""
        source = gw.config_source
        if source is None:
            raise Conflict(
                "this gateway was given its settings directly, not from a file or the "
                "environment: there is nothing to reload from",
                param="config",
            )
        async with lock:
            try:
                new = await asyncio.to_thread(source.load)
            except ConfigError as exc:
                raise BadRequest("; ".join(exc.problems), param="config") from None
            change = await apply_settings(gw, new)
            path = source.path
            await audit_action(
                gw,
                actor,
                "config.reload",
                str(path) if path is not None else "(environment)",
                after={"changed": change.changed, "needs_restart": change.needs_restart},
            )
        return _change(change, None)

    @api.post(
        "/save",
        response_model=Saved,
        summary="Save the running config to its file",
        responses=refusals(
            {409: "The gateway was started without a config file, or cannot write it."}
        ),
    )
    async def save(actor: Actor = admin) -> Saved:
        """Write the settings the gateway runs with (every value set by the file, the
        environment, flags or the admin API; defaults left out) to the config file it
        started from, atomically. Comments in the old file are not kept."""
        path = source_file()
        if path is None:
            raise Conflict(
                "the gateway was started without a config file (--config or CORRAL_CONFIG): "
                "there is no file to save to",
                param="config",
            )
        async with lock:
            data = plain(gw.settings.model_dump(exclude_unset=True))
            text = "# Written by Corral (POST /admin/config/save).\n" + yaml.safe_dump(
                data, sort_keys=False, allow_unicode=True
            )
            try:
                await asyncio.to_thread(write_atomically, path, text)
            except OSError as exc:
                raise Conflict(
                    f"cannot write {path}: {exc.strerror or exc}", param="config"
                ) from None
            await audit_action(gw, actor, "config.save", str(path), after={"bytes": len(text)})
        return Saved(file=str(path), bytes=len(text.encode()))

    return api
