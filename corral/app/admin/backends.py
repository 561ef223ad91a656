"""``/admin/backends``: the fleet's members with their live state, and what to do to them.

Register and deregister (kept in the store, probed first), enable and disable, drain
and undrain, refresh now, and change slots, weight, tags and labels. A change to a
registered backend is stored (and audited) in one transaction before it applies; a
change to a backend from the config file, an agent or a worker lasts until restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from corral.adapters.store.backends import backend_config, update_backend, validate_backend
from corral.app.admin.audit import audit_action
from corral.app.admin.deps import Actor, requires
from corral.app.admin.openapi import refusals
from corral.app.admin.registry import backend_state, deregister, register, store_of
from corral.app.admin.views import BackendView, backend_view, fleet_now
from corral.config.models import BackendConfig
from corral.core.errors import BadRequest
from corral.core.types import BackendState

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = [
    "ENGINE_KINDS",
    "BackendList",
    "BackendPatch",
    "PatchResult",
    "SeedRegistration",
    "router",
]

# Seed 004's "engine" names, and the API dialect each speaks.
ENGINE_KINDS: dict[str, str] = {
    "ollama": "ollama",
    "vllm": "openai",
    "openai": "openai",
    "llamacpp": "openai",
    "llama.cpp": "openai",
    "sglang": "openai",
}
_SEED_FIELDS = {"kind": "engine", "max_concurrency": "max_concurrent", "vram_gb": "gpu_memory_gb"}


class BackendList(BaseModel):
    backends: list[BackendView] = Field(description="Every backend, by name.")


class SeedRegistration(BaseModel):
    """Seed 004's registration body (MindRouter2), mapped onto a backend's settings."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "4" is not 4, as elsewhere

    url: str = Field(description="Base URL of the engine, http(s)://host:port.")
    name: str | None = Field(default=None, description="Unique name; defaults to host:port.")
    engine: Literal["ollama", "vllm", "openai", "llamacpp", "llama.cpp", "sglang"] = Field(
        default="ollama", description="ollama speaks Ollama's API; the others OpenAI's (kind)."
    )
    max_concurrent: int | None = Field(
        default=None, description="Requests at once (max_concurrency)."
    )
    gpu_memory_gb: float | None = Field(default=None, description="Memory for models (vram_gb).")


class BackendPatch(BaseModel):
    """Fields to change; an omitted field stays, null puts it back to its default."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "4" is not 4, as elsewhere

    max_concurrency: int | None = Field(default=None, description="Requests at once (>= 1).")
    weight: float | None = Field(default=None, description="Relative share (> 0).")
    max_per_model: int | None = Field(default=None, description="Requests at once per model.")
    tags: list[str] | None = Field(default=None, description="Replaces the tags.")
    labels: dict[str, str] | None = Field(default=None, description="Replaces the labels.")


class PatchResult(BaseModel):
    backend: BackendView = Field(description="The backend after the change.")
    persisted: bool = Field(
        description="True: stored, kept across restarts (a registered backend). False: "
        "applies to the running gateway until it restarts."
    )
    note: str = Field(description="What happens to the change at the next restart.")


def _live_fields(state: BackendState) -> dict[str, Any]:
    return {
        "name": state.name,
        "url": state.url,
        "kind": state.kind,
        "max_concurrency": state.max_concurrency,
        "weight": state.weight,
        "max_per_model": state.max_per_model,
        "tags": list(state.tags),
        "labels": dict(state.labels),
    }


def _apply(gw: Gateway, state: BackendState, config: BackendConfig) -> None:
    state.max_per_model = config.max_per_model
    state.tags = tuple(config.tags)
    state.labels = dict(config.labels)
    gw.fleet.set_capacity(state.name, max_concurrency=config.max_concurrency, weight=config.weight)


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(prefix="/admin/backends", tags=["backends"])
    admin = Depends(requires(gw, "admin"))

    def view(state: BackendState) -> BackendView:
        return backend_view(gw, state)

    @api.get("", response_model=BackendList, summary="List backends with their live state")
    async def list_backends(
        origin: Annotated[
            str | None, Query(description="Only this origin: config, registered, agent, worker.")
        ] = None,
        tag: Annotated[str | None, Query(description="Only backends with this tag.")] = None,
        _: Actor = admin,
    ) -> BackendList:
        """Every backend: health, in-flight, queue, loaded models, breakers, last error,
        engine signals and agent telemetry."""
        now = fleet_now()
        found = [
            backend_view(gw, b, now)
            for name, b in sorted(gw.fleet.backends.items())
            if (origin is None or b.origin == origin) and (tag is None or tag in b.tags)
        ]
        return BackendList(backends=found)

    @api.post(
        "",
        response_model=BackendView,
        status_code=201,
        summary="Register a backend",
        responses=refusals(
            {
                400: "A bad field, or no engine of that kind at the URL.",
                409: "The name is taken.",
            }
        ),
    )
    async def register_one(body: BackendConfig, actor: Actor = admin) -> BackendView:
        """Add a backend at run time. The URL is probed first and refused (400, saying what
        answered) unless an engine of the declared kind answers there; a taken name is 409.
        Kept in the store: it rejoins after a restart."""
        return view(await register(gw, actor, body))

    @api.post(
        "/register",
        response_model=BackendView,
        status_code=201,
        summary="Register a backend (seed 004 shape)",
        responses=refusals(
            {
                400: "A bad field, or no engine of that kind at the URL.",
                409: "The name is taken.",
            }
        ),
    )
    async def register_seed(body: SeedRegistration, actor: Actor = admin) -> BackendView:
        """Seed 004's registration: name, url, engine (ollama, vllm, ...), max_concurrent,
        gpu_memory_gb. Same checks and effect as POST /admin/backends."""
        fields = {
            "url": body.url,
            "name": body.name,
            "kind": ENGINE_KINDS[body.engine],
            "max_concurrency": body.max_concurrent,
            "vram_gb": body.gpu_memory_gb,
        }
        try:
            config = validate_backend({k: v for k, v in fields.items() if v is not None})
        except BadRequest as exc:
            param = _SEED_FIELDS.get(exc.param or "", exc.param)
            message = exc.message.replace(f"backend {exc.param}:", f"{param}:")
            raise BadRequest(message, param=param) from None
        return view(await register(gw, actor, config))

    @api.get("/{name}", response_model=BackendView, summary="One backend's live state")
    async def get_one(name: str, _: Actor = admin) -> BackendView:
        """The same view as in the list, for one backend (404 if unknown)."""
        return view(backend_state(gw, name))

    @api.delete(
        "/{name}",
        response_model=BackendView,
        summary="Deregister a backend",
        responses=refusals({409: "The backend was not registered through this API."}),
    )
    async def delete_one(name: str, actor: Actor = admin) -> BackendView:
        """Remove a registered backend from the store and the fleet. Requests running on it
        finish; nothing new goes to it. A backend from the config file, an agent or a
        worker is refused (409) with where to remove it instead. Answers what it was."""
        return view(await deregister(gw, actor, name))

    @api.patch("/{name}", response_model=PatchResult, summary="Change slots, weight, tags, labels")
    async def patch_one(name: str, body: BackendPatch, actor: Actor = admin) -> PatchResult:
        """Change max_concurrency, weight, max_per_model, tags or labels. Stored for a
        registered backend; for the others it lasts until the gateway restarts."""
        state = backend_state(gw, name)
        changes = body.model_dump(include=body.model_fields_set)
        if not changes:
            raise BadRequest("nothing to change: give at least one field", param="body")
        before = _live_fields(state)
        if state.origin == "registered":
            _, stored = await update_backend(store_of(gw), name, changes, actor=actor.name)
            config = backend_config(stored)
        else:
            fields = {**before, **changes}
            config = validate_backend({k: v for k, v in fields.items() if v is not None})
        _apply(gw, state, config)
        after = _live_fields(state)
        if state.origin != "registered":
            await audit_action(gw, actor, "backend.update", name, before=before, after=after)
        persisted = state.origin == "registered"
        note = (
            "stored: kept across restarts"
            if persisted
            else f"a {state.origin} backend: this lasts until the gateway restarts"
        )
        return PatchResult(backend=view(state), persisted=persisted, note=note)

    async def set_enabled(actor: Actor, name: str, on: bool) -> BackendView:
        state = backend_state(gw, name)
        before = {"enabled": state.enabled}
        if state.origin == "registered":
            # Stored, so it stays so after a restart; enabled is the default.
            await update_backend(
                store_of(gw), name, {"enabled": None if on else False}, actor=actor.name
            )
        gw.fleet.set_enabled(name, on)
        if state.origin != "registered":
            await audit_action(
                gw, actor, f"backend.{'enable' if on else 'disable'}", name,
                before=before, after={"enabled": on},
            )  # fmt: skip
        return view(state)

    @api.post("/{name}/enable", response_model=BackendView, summary="Enable a backend")
    async def enable(name: str, actor: Actor = admin) -> BackendView:
        """Let it take requests again (stored for a registered backend)."""
        return await set_enabled(actor, name, True)

    @api.post("/{name}/disable", response_model=BackendView, summary="Disable a backend")
    async def disable(name: str, actor: Actor = admin) -> BackendView:
        """Keep it (and probe it) but choose it for nothing; running requests finish.
        Stored for a registered backend."""
        return await set_enabled(actor, name, False)

    @api.post("/{name}/drain", response_model=BackendView, summary="Drain a backend")
    async def drain(
        name: str,
        wait_s: Annotated[
            float,
            Query(ge=0, le=3600, description="Wait up to this long for in-flight to reach 0."),
        ] = 0.0,
        actor: Actor = admin,
    ) -> BackendView:
        """Finish what it has, take nothing new (until undrained or restarted). With
        wait_s, answer once it is drained or the time is up: `drained` says which."""
        state = backend_state(gw, name)
        before = {"draining": state.draining, "in_flight": state.in_flight}
        gw.fleet.drain(name, True)
        await audit_action(
            gw, actor, "backend.drain", name, before=before, after={"draining": True}
        )
        if wait_s > 0:
            await gw.fleet.wait_drained(name, wait_s)
        return view(state)

    @api.post("/{name}/undrain", response_model=BackendView, summary="Stop draining a backend")
    async def undrain(name: str, actor: Actor = admin) -> BackendView:
        """Let a draining backend take new requests again."""
        state = backend_state(gw, name)
        before = {"draining": state.draining}
        gw.fleet.drain(name, False)
        await audit_action(
            gw, actor, "backend.undrain", name, before=before, after={"draining": False}
        )
        return view(state)

    @api.post("/{name}/refresh", response_model=BackendView, summary="Probe a backend now")
    async def refresh(name: str, actor: Actor = admin) -> BackendView:
        """Probe it now and re-read its models, loaded models and engine signals."""
        state = backend_state(gw, name)
        before = {"healthy": state.healthy, "models": sorted(state.models)}
        await gw.fleet.probe(name, models=True)
        after = {"healthy": state.healthy, "models": sorted(state.models)}
        await audit_action(gw, actor, "backend.refresh", name, before=before, after=after)
        return view(state)

    return api
