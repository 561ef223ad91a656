"""The bodies and answers of the admin API's model routes (``/admin/models...``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from corral.core.keepalive import parse_keep_alive

__all__ = [
    "ActionResult",
    "BackendResult",
    "CopyRequest",
    "DemandView",
    "IdleList",
    "IdleView",
    "ModelMapView",
    "ModelRequest",
    "ModelView",
    "Placement",
    "PullRequest",
    "RecommendationList",
    "RecommendationView",
    "WarmRequest",
]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]
Kind = Literal["ollama", "openai"]

_MODEL = "The model, by any name clients use for it (a logical name, an alias, a backend's own)."
_BACKENDS = (
    "Backends to act on, by name or URL. Omitted: the default targets described for the route."
)


class _Body(BaseModel):
    # A misspelt field (``backend`` for ``backends``) is refused, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class ModelRequest(_Body):
    """A model and, optionally, the backends to act on."""

    model: Name = Field(description=_MODEL)
    backends: list[Name] | None = Field(default=None, min_length=1, description=_BACKENDS)


class PullRequest(ModelRequest):
    insecure: bool = Field(
        default=False, description="Allow an insecure registry (Ollama's `insecure`)."
    )
    stream: bool = Field(
        default=True,
        description="Stream NDJSON progress (default); false answers only the summary.",
    )


class CopyRequest(_Body):
    source: Name = Field(description="The model to copy, by any name clients use for it.")
    destination: Name = Field(description="The new name, as the Ollama backends will list it.")
    backends: list[Name] | None = Field(default=None, min_length=1, description=_BACKENDS)


class WarmRequest(ModelRequest):
    copies: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Without `backends`: how many backends to load it on, chosen as the "
        "scheduler would route to them (default 1).",
    )
    keep_alive: str | int | float | None = Field(
        default=None,
        description="How long it stays loaded once idle: seconds, or a duration such as "
        '"30m" or "2h"; negative = until unloaded. Omitted: the backend\'s default (5m).',
    )

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError("keep_alive must be a number of seconds or a duration such as 10m")
        if parse_keep_alive(value) == 0:
            raise ValueError("a keep_alive of 0 unloads at once: use /admin/models/unload")
        return value


class BackendResult(BaseModel):
    backend: str = Field(description="The backend's name.")
    kind: Kind = Field(description="ollama, or openai (vLLM, llama.cpp and other such servers).")
    status: Literal["ok", "error", "skipped"] = Field(
        description="ok: done; error: the backend refused or failed (see error); "
        "skipped: not attempted (see reason)."
    )
    error: str | None = Field(default=None, description="What went wrong, when status is error.")
    reason: str | None = Field(
        default=None, description="Why it was skipped or chosen, or what its kind implies."
    )
    loaded: bool | None = Field(
        default=None, description="warm and unload: resident there afterwards (its /api/ps)."
    )
    expires_at: str | None = Field(
        default=None,
        description="warm: when it unloads if left idle (RFC 3339, UTC); null: never, "
        "or not loaded.",
    )


class ActionResult(BaseModel):
    model: str = Field(description="The model acted on, as clients name it (copy: the source).")
    status: Literal["success", "partial", "error", "skipped"] = Field(
        description="success: every backend attempted succeeded; partial: some failed; "
        "error: all attempted failed; skipped: nothing was attempted."
    )
    results: list[BackendResult] = Field(description="One entry per backend concerned.")
    message: str | None = Field(default=None, description="A note on the whole action.")


class Placement(BaseModel):
    backend: str = Field(description="A backend holding the model.")
    kind: Kind = Field(description="ollama, or openai (vLLM, llama.cpp, ...).")
    upstream: str = Field(description="What that backend calls the model.")
    size: int = Field(description="Bytes on disk (its /api/tags); 0 when unknown.")
    loaded: bool = Field(description="Resident in memory now.")
    always_loaded: bool = Field(
        description="An OpenAI-kind server: its model is loaded for as long as it runs."
    )
    expires_at: str | None = Field(
        description="When it unloads if left idle (RFC 3339, UTC); null: not loaded, or never."
    )
    expires_in_s: float | None = Field(description="Seconds until then; null as above.")
    healthy: bool = Field(description="The backend passed its last probe.")
    enabled: bool = Field(description="The backend takes requests (not disabled).")
    draining: bool = Field(description="The backend finishes what it has and takes nothing new.")
    in_flight: int = Field(description="Requests for this model running there now.")


class DemandView(BaseModel):
    requests_1m: int = Field(description="Requests for the model that ended in the last minute.")
    requests_5m: int = Field(description="... in the last 5 minutes.")
    requests_15m: int = Field(description="... in the last 15 minutes.")
    last_request_at: str | None = Field(
        description="When the last one ended (RFC 3339, UTC); null: none since the gateway started."
    )


class ModelView(BaseModel):
    model: str = Field(description="The name clients use (a logical model's configured name).")
    configured: bool = Field(description="A logical model of the settings (`models:`).")
    aliases: list[str] = Field(description="Its other names (configured aliases).")
    backends: list[Placement] = Field(description="Every backend holding it, healthy or not.")
    loaded_on: list[str] = Field(description="The backends where it is resident now.")
    demand: DemandView = Field(description="Recent requests for it.")


class ModelMapView(BaseModel):
    models: list[ModelView] = Field(description="Every model in the fleet, by name.")


class IdleView(BaseModel):
    model: str = Field(description="The model, as clients name it.")
    backend: str = Field(description="Where it is loaded and idle.")
    idle_s: float = Field(
        description="Seconds since it was last asked of this backend (at least since the "
        "gateway started, if never)."
    )
    last_request_at: str | None = Field(
        description="When a request for it there last ended (RFC 3339); null: never."
    )
    expires_at: str | None = Field(
        description="When the backend unloads it by itself (RFC 3339); null: never."
    )
    size: int = Field(description="Bytes (its /api/tags): roughly the memory given back.")


class IdleList(BaseModel):
    window_s: float = Field(description="Idle means not asked for in this many seconds.")
    since: str = Field(description="When the gateway began counting (its start, RFC 3339).")
    models: list[IdleView] = Field(description="Candidates to unload, idlest first.")


class RecommendationView(BaseModel):
    model: str = Field(description="The model, as clients name it.")
    action: Literal["warm", "pull"] = Field(
        description="warm: load it on `backends`; pull: no backend holds it."
    )
    backends: list[str] = Field(description="Where to warm it, best first.")
    loaded_on: list[str] = Field(description="Available backends where it is loaded now.")
    needed: int = Field(description="Copies its demand needs loaded.")
    requests: int = Field(description="Requests for it in the window.")
    per_minute: float = Field(description="The same, per minute.")
    concurrency: float = Field(description="Requests in service at once, on average.")
    mean_wait_s: float = Field(description="Average time its requests waited in the queue.")
    reason: str = Field(description="Why, in words.")


class RecommendationList(BaseModel):
    window_s: float = Field(description="The demand looked at: requests in this many seconds.")
    min_requests: int = Field(description="Fewer requests than this are not recommended.")
    recommendations: list[RecommendationView] = Field(description="Busiest model first.")
