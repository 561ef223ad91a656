"""Settings of the scheduler: routing per model group, tenants' shares, breakers."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from pydantic import Field

from corral.config.base import Seconds, _Section

__all__ = ["BreakersConfig", "PolicyGroupConfig", "RoutingConfig", "TenantsConfig"]


class PolicyGroupConfig(_Section):
    """A routing policy for the models whose names match one of ``models``."""

    models: list[str] = Field(
        min_length=1, description="Model name patterns (shell-style, e.g. 'qwen*')."
    )
    policy: str = Field(description="Policy name for these models.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options for that policy (see docs/scheduling.md)."
    )

    def matches(self, model: str) -> bool:
        return any(fnmatchcase(model, p) for p in self.models)


class RoutingConfig(_Section):
    """How backends are chosen: `policy` (top level) is the default for every model."""

    options: dict[str, Any] = Field(
        default_factory=dict, description="Options for the default policy."
    )
    groups: list[PolicyGroupConfig] = Field(
        default_factory=list, description="Other policies for model groups; first match wins."
    )
    keep_alive_s: Seconds = Field(
        default=300.0,
        description="How long a model is assumed resident after serving (until /api/ps says).",
    )


class TenantsConfig(_Section):
    """Fair shares. A tenant is the X-Corral-Tenant header's value, else the client address."""

    default_weight: float = Field(default=1.0, gt=0, description="Weight of unlisted tenants.")
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Weight per tenant or group, e.g. {admin: 10, faculty: 3, student: 1}.",
    )
    priorities: dict[str, int] = Field(
        default_factory=dict,
        description="Priority class per tenant (higher goes first; default 0).",
    )
    trust_header: bool = Field(
        default=True, description="Take the tenant from the X-Corral-Tenant header."
    )

    def weight(self, tenant: str) -> float:
        return self.weights.get(tenant, self.default_weight)


class BreakersConfig(_Section):
    """Circuit breakers per backend and per backend:model."""

    enabled: bool = Field(default=True, description="Open breakers on repeated failures.")
    consecutive_failures: int = Field(
        default=5, ge=1, description="Transient failures in a row that open a breaker."
    )
    error_rate: float = Field(
        default=0.5, gt=0, le=1, description="Failure share over window_s that opens it."
    )
    window_s: Seconds = Field(default=30.0, description="Window for the error rate.")
    min_requests: int = Field(
        default=10, ge=1, description="Requests in the window before the rate counts."
    )
    open_s: Seconds = Field(default=5.0, description="First cooldown; doubles on each re-open.")
    max_open_s: Seconds = Field(default=60.0, description="Longest cooldown.")
    half_open_probes: int = Field(
        default=1, ge=1, description="Requests let through to test a cooled-down backend."
    )
