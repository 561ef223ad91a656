"""The settings tree: typed, validated, immutable.

These models know nothing about where values come from; `corral.config.loader`
layers the file, the environment and CLI flags on top of them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corral.config.audit import AuditConfig
from corral.config.auth import AuthConfig, is_loopback
from corral.config.base import Seconds, _Section, default_data_dir
from corral.config.fleet import FleetConfig
from corral.config.scheduling import BreakersConfig, RoutingConfig, TenantsConfig
from corral.config.usage import UsageConfig
from corral.config.workers import WorkersConfig
from corral.core.models import LogicalModel
from corral.core.names import normalize_model, url_host
from corral.core.policies import POLICIES, make_policy

__all__ = [
    "DEFAULT_POLICIES",
    "BackendConfig",
    "BackendKind",
    "CorsConfig",
    "HealthConfig",
    "ImagesConfig",
    "LimitsConfig",
    "LogLevel",
    "LogicalModelConfig",
    "ModelUpstreamConfig",
    "QueueConfig",
    "RetryConfig",
    "Settings",
    "TimeoutsConfig",
    "split_backend_spec",
]

DEFAULT_POLICIES: tuple[str, ...] = tuple(sorted(POLICIES))
"""Policy names accepted when the caller does not pass its own registry's names."""

BackendKind = Literal["ollama", "openai"]
LogLevel = Literal["debug", "info", "warning", "error"]

# Concurrency an unconfigured backend gets: an Ollama box runs a few models' worth of
# parallel slots, an OpenAI-compatible server (vLLM, llama.cpp server) batches many.
_DEFAULT_CONCURRENCY: dict[str, int] = {"ollama": 4, "openai": 32}
# Backend names travel in X-Corral-Backend headers and comma-separated env lists.
_NAME_RE = re.compile(r"^[^\s,=]{1,128}$")

# Tags and label keys travel in query strings and comma-separated lists.
_TAG_RE = re.compile(r"^[^\s,=]{1,64}$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")

# An allowed image host is a bare name or IP; these characters mean a URL was pasted.
_HOST_BAD_RE = re.compile(r"[\s/@?#*\[\]]")

# One label of a DNS name (RFC 1123): letters, digits and inner hyphens, 1-63 of them.
_DNS_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def listen_host(host: str) -> str:
    """``host`` as an address to listen on: an IP address (IPv6 without brackets, as the
    socket calls take it) or a host name; ValueError for anything else (a URL, a port,
    spaces), which would otherwise fail only at the next start."""
    name = host.strip()
    bare = name.removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    labels = name.removesuffix(".").split(".")
    if len(name) > 253 or not all(_DNS_LABEL_RE.match(label) for label in labels):
        raise ValueError(
            f"{host!r} is not an IP address or host name to listen on "
            "(e.g. 127.0.0.1, 0.0.0.0, ::1 or gateway.example.com; no scheme or port)"
        )
    return name


def split_backend_spec(spec: str) -> dict[str, Any]:
    """Split ``[name=][kind+]scheme://host:port[/path]`` into BackendConfig fields.

    Only the shape is taken apart here; the URL itself is checked by BackendConfig.
    """
    text = spec.strip()
    fields: dict[str, Any] = {}
    eq, sep = text.find("="), text.find("://")
    if eq > 0 and (sep < 0 or eq < sep):
        fields["name"], text = text[:eq].strip(), text[eq + 1 :].strip()
    scheme = text[:sep] if sep > 0 else ""
    if "+" in scheme:
        fields["kind"], _, bare = scheme.partition("+")
        text = bare + text[sep:]
    fields["url"] = text
    return fields


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _normalise_url(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL, e.g. http://gpu1:11434")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    # A bare http:// host would silently mean port 80, never Ollama's 11434.
    if port is None and scheme == "http":
        raise ValueError("needs an explicit port, e.g. http://gpu1:11434")
    return f"{scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _derive_name(url: str) -> str:
    parts = urlsplit(url)
    return f"{url_host(parts.hostname or '')}:{parts.port or 443}"


class BackendConfig(_Section):
    """One LLM server Corral forwards to."""

    url: str = Field(description="Base URL, http(s)://host:port[/path]; trailing slash dropped.")
    kind: BackendKind = Field(default="ollama", description="API dialect the backend speaks.")
    name: str = Field(
        default_factory=lambda data: _derive_name(data["url"]),
        description="Unique name; defaults to host:port.",
    )
    max_concurrency: int = Field(
        default_factory=lambda data: _DEFAULT_CONCURRENCY[data["kind"]],
        ge=1,
        description="Requests in flight at once; defaults to 4 for ollama, 32 for openai.",
    )
    weight: float = Field(default=1.0, gt=0, description="Relative share for weighted policies.")
    enabled: bool = Field(default=True, description="Disabled backends are kept but never chosen.")
    vram_gb: float | None = Field(
        default=None,
        gt=0,
        description="Memory for models (GiB); the cost model uses it to foresee evictions.",
    )
    max_loaded_models: int | None = Field(
        default=None,
        ge=1,
        description="Models the server keeps loaded at once (OLLAMA_MAX_LOADED_MODELS).",
    )
    max_per_model: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight at once for one model here; unset = max_concurrency.",
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Free-form marks for operators and filters, e.g. [gpu-a100, eu].",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="key: value marks, e.g. {rack: r12, team: search}.",
    )

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, tags: list[str]) -> list[str]:
        for i, tag in enumerate(tags):
            if not _TAG_RE.match(tag):
                raise ValueError(f"tags[{i}] {tag!r}: 1-64 characters without spaces, ',' or '='")
        return list(dict.fromkeys(tags))  # repeats mean nothing more

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not _LABEL_KEY_RE.match(key):
                raise ValueError(
                    f"label {key!r}: keys are 1-63 letters, digits, '.', '_', '/' or '-'"
                )
            if len(value) > 256 or not value.isprintable():
                raise ValueError(f"label {key!r}: values are up to 256 printable characters")
        return labels

    @model_validator(mode="before")
    @classmethod
    def _accept_spec(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = split_backend_spec(data)
        if isinstance(data, dict):
            # Omitted and null mean the same: use the derived default.
            data = {k: v for k, v in data.items() if v is not None}
            url = data.get("url")
            if isinstance(url, str) and "+" in url.partition("://")[0]:
                parsed = split_backend_spec(url)
                if "kind" in data and data["kind"] != parsed.get("kind"):
                    raise ValueError(
                        f"kind {data['kind']!r} contradicts the {parsed.get('kind')}+ URL prefix"
                    )
                data.update(parsed)
            url = data.get("url")
            if data.get("kind") == "openai" and isinstance(url, str):
                # OpenAI clients are given base URLs ending in /v1; Corral adds /v1/...
                # itself, so the same URL works here instead of reaching /v1/v1/...
                data["url"] = url.rstrip().rstrip("/").removesuffix("/v1")
        return data

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return _normalise_url(url)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError("must be 1-128 characters without spaces, commas or '='")
        return name


def _model_name(name: str) -> str:
    name = name.strip()
    if not name or any(c.isspace() for c in name):
        raise ValueError("must be a model name without spaces, e.g. qwen2.5:7b")
    return name


ModelName = Annotated[str, AfterValidator(_model_name)]


class ModelUpstreamConfig(_Section):
    """What one backend calls a logical model."""

    backend: str = Field(description="A backend name from `backends`.")
    upstream_name: ModelName = Field(description="The backend's own name for the model.")


class LogicalModelConfig(_Section):
    """One model under one name, whatever each backend calls it."""

    name: ModelName = Field(description="The name clients see in model lists.")
    aliases: list[ModelName] = Field(
        default_factory=list, description="Other names clients may use."
    )
    backends: list[ModelUpstreamConfig] = Field(
        default_factory=list, description="Backends that call the model something else."
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_name(cls, data: Any) -> Any:
        # A bare name (the comma-separated CORRAL_MODELS form) declares a model with
        # no aliases: with list_unmapped false, a list of names is what gets listed.
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _no_repeats(self) -> Self:
        # Names compare as Ollama reads them: "qwen" and "qwen:latest" are one name.
        seen = {normalize_model(self.name): ("the name", self.name)}
        for i, alias in enumerate(self.aliases):
            key = normalize_model(alias)
            if key in seen:
                what, first = seen[key]
                raise ValueError(f"aliases[{i}] {alias!r} repeats {what}{_same(key, alias, first)}")
            seen[key] = (f"aliases[{i}]", alias)
        backends: dict[str, int] = {}
        for i, upstream in enumerate(self.backends):
            if upstream.backend in backends:
                raise ValueError(
                    f"backends[{i}] names backend {upstream.backend!r} again "
                    f"(first in backends[{backends[upstream.backend]}]); "
                    "a model has one name per backend"
                )
            backends[upstream.backend] = i
        return self

    def to_logical(self) -> LogicalModel:
        """The plain core value that `corral.core.models.ModelMap` is built from."""
        upstreams = {b.backend: b.upstream_name for b in self.backends}
        return LogicalModel(self.name, tuple(self.aliases), upstreams)


def _same(key: str, given: str, first: str) -> str:
    """Say why two different-looking names clash, when normalization is the reason."""
    return f" (both mean {key!r})" if given != first else ""


def _model_conflicts(models: list[LogicalModelConfig], backends: list[str] | None) -> list[str]:
    """Problems between models: a name claimed twice, an upstream name claimed twice on
    one backend, a backend that is not configured (skipped when ``backends`` is None)."""
    problems: list[str] = []
    owner: dict[str, tuple[int, str, str]] = {}  # normalized -> (model index, role, as given)
    claimed: dict[tuple[str, str], int] = {}  # (backend, normalized upstream) -> model index
    for i, model in enumerate(models):
        names = [(f"models[{i}].name", model.name, "the name")]
        names += [(f"models[{i}].aliases[{j}]", a, "an alias") for j, a in enumerate(model.aliases)]
        for where, name, role in names:
            key = normalize_model(name)
            if key not in owner:
                owner[key] = (i, role, name)
                continue
            j, other, first = owner[key]
            problems.append(
                f"{where} {name!r} is already {other} of models[{j}] ({models[j].name!r})"
                + _same(key, name, first)
            )
        for j, upstream in enumerate(model.backends):
            where = f"models[{i}].backends[{j}]"
            if backends is not None and upstream.backend not in backends:
                known = ", ".join(backends) if backends else "none are configured"
                problems.append(
                    f"{where}.backend {upstream.backend!r} is not a configured backend "
                    f"(known: {known})"
                )
            slot = (upstream.backend, normalize_model(upstream.upstream_name))
            if slot in claimed:
                problems.append(
                    f"{where}.upstream_name {upstream.upstream_name!r} on {upstream.backend!r} "
                    f"already names models[{claimed[slot]}] there"
                )
            claimed.setdefault(slot, i)
    return problems


class HealthConfig(_Section):
    interval_s: Seconds = Field(
        default=5.0, description="Time between health probes of each backend."
    )
    timeout_s: Seconds = Field(
        default=3.0, description="A probe slower than this counts as failed."
    )
    models_refresh_s: Seconds = Field(
        default=30.0, description="How often model lists are re-read."
    )


class TimeoutsConfig(_Section):
    connect_s: Seconds = Field(default=10.0, description="TCP+TLS connect to a backend.")
    first_byte_s: Seconds = Field(
        default=600.0, description="Wait for the first byte (cold model load)."
    )
    first_byte_loaded_s: Seconds = Field(
        default=120.0,
        description="Wait for the first byte when the model is already loaded there.",
    )
    stream_idle_s: Seconds = Field(default=300.0, description="Longest silence inside a stream.")
    request_s: Seconds = Field(default=3600.0, description="Whole request, end to end.")


class QueueConfig(_Section):
    max_waiting: int = Field(default=1024, ge=0, description="Requests allowed to wait for a slot.")
    timeout_s: Seconds = Field(default=30.0, description="Longest a request waits before a 503.")
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After header on a full queue.")
    max_per_tenant: int | None = Field(
        default=None, ge=1, description="Requests one tenant may have waiting; beyond it, 429."
    )
    aging_s: Seconds = Field(
        default=30.0, description="Each wait this long lifts a request one priority class."
    )


class RetryConfig(_Section):
    attempts: int = Field(default=3, ge=1, description="Total tries, the first one included.")
    backoff_s: Seconds = Field(default=0.05, description="Pause before the first retry; doubles.")
    backoff_max_s: Seconds = Field(default=1.0, description="Upper bound for the pause.")
    budget_ratio: float = Field(
        default=0.2,
        ge=0,
        description="Retries allowed per request over 10 s (plus 3), so retries never "
        "amplify an outage; retries away from a dead backend are free.",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) is below backoff_s ({self.backoff_s})"
            )
        return self


class LimitsConfig(_Section):
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1, description="Largest request body.")
    max_streams: int = Field(default=1000, ge=1, description="Streaming responses open at once.")


class CorsConfig(_Section):
    origins: list[str] = Field(default_factory=list, description="Allowed origins; [] = off.")
    allow_credentials: bool = Field(
        default=False, description="Send Access-Control-Allow-Credentials."
    )
    max_age_s: int = Field(default=600, ge=0, description="Access-Control-Max-Age for preflights.")

    @field_validator("origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if origin != "*" and (parts.scheme not in ("http", "https") or parts.path):
                raise ValueError(f"{origin!r} is not '*' or scheme://host[:port]")
        return [o.rstrip("/") for o in origins]

    @model_validator(mode="after")
    def _credentials_need_explicit_origins(self) -> Self:
        if self.allow_credentials and "*" in self.origins:
            raise ValueError("allow_credentials cannot be combined with origin '*'")
        return self


class StructuredConfig(_Section):
    """Checking answers against the JSON schema a request asked for."""

    check: bool = Field(
        default=True, description="Check answers to requests that carry a JSON schema."
    )
    on_invalid: Literal["mark", "retry"] = Field(
        default="mark",
        description="Non-streamed invalid answer: mark it (header) or retry once, then mark.",
    )


class ImagesConfig(_Section):
    """Fetching http(s) image URLs for backends that take only image bytes (Ollama)."""

    fetch_urls: bool = Field(
        default=True, description="Fetch image URLs; off makes an image URL a 400."
    )
    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="Largest image fetched.")
    timeout_s: Seconds = Field(
        default=10.0, description="Whole fetch of one image, redirects included."
    )
    max_redirects: int = Field(default=3, ge=0, description="Redirects followed per image.")
    allow_private: bool = Field(
        default=False, description="Also fetch from private, loopback and link-local addresses."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Hosts images may come from; [] = any public host."
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        out = []
        for host in hosts:
            # Compared with the URL's host as yarl gives it: lowercase, IPv6 unbracketed.
            name = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
            bare = name.removeprefix("*.")
            if not bare or (":" in bare and not _is_ipv6(bare)) or _HOST_BAD_RE.search(bare):
                raise ValueError(
                    f"{host!r} is not a host name or IP address (no scheme, port or path)"
                )
            # IPv6 has many spellings; keep the one yarl gives for a URL's host.
            out.append(str(ipaddress.IPv6Address(name)) if _is_ipv6(name) else name)
        return out


class Settings(_Section):
    """Everything the gateway reads at start-up."""

    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Interface to listen on: an IP address or a host name (no scheme, no port).",
    )
    port: int = Field(default=8088, ge=1, le=65535, description="TCP port to listen on.")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where Corral keeps its state (the SQLite database, the server secret, "
        "the usage journal).",
    )
    database_url: str | None = Field(
        default=None,
        description="The store: sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB; "
        "unset = <data_dir>/corral.db.",
    )
    secret_file: Path | None = Field(
        default=None,
        description="The server secret API-key digests are keyed with; unset = "
        "<data_dir>/secret.key (made on first start, mode 0600).",
    )
    backends: list[BackendConfig] = Field(default_factory=list, description="LLM servers.")
    models: list[LogicalModelConfig] = Field(
        default_factory=list, description="Logical models: one name across backends."
    )
    list_unmapped: bool = Field(
        default=True, description="Also list upstream models no logical model claims."
    )
    policy: str = Field(default="corral", description="Name of the backend selection policy.")
    log_level: LogLevel = Field(default="info", description="Least severe log level written.")
    log_buffer: int = Field(
        default=1000,
        ge=0,
        le=100_000,
        description="Recent log records kept in memory for GET /admin/logs; 0 = none.",
    )
    health: HealthConfig = Field(default_factory=lambda: HealthConfig())
    timeouts: TimeoutsConfig = Field(default_factory=lambda: TimeoutsConfig())
    queue: QueueConfig = Field(default_factory=lambda: QueueConfig())
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig())
    limits: LimitsConfig = Field(default_factory=lambda: LimitsConfig())
    cors: CorsConfig = Field(default_factory=lambda: CorsConfig())
    images: ImagesConfig = Field(default_factory=lambda: ImagesConfig())
    structured: StructuredConfig = Field(default_factory=lambda: StructuredConfig())
    routing: RoutingConfig = Field(default_factory=lambda: RoutingConfig())
    tenants: TenantsConfig = Field(default_factory=lambda: TenantsConfig())
    breakers: BreakersConfig = Field(default_factory=lambda: BreakersConfig())
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig())
    usage: UsageConfig = Field(default_factory=lambda: UsageConfig())
    fleet: FleetConfig = Field(default_factory=lambda: FleetConfig())
    workers: WorkersConfig = Field(default_factory=lambda: WorkersConfig())
    audit: AuditConfig = Field(default_factory=lambda: AuditConfig())

    @field_validator("host")
    @classmethod
    def _check_host(cls, host: str) -> str:
        return listen_host(host)

    @model_validator(mode="after")
    def _no_open_gateway(self) -> Settings:
        # Anyone who can reach a non-loopback address could use the fleet unasked.
        if self.auth.mode == "off" and not self.auth.allow_open and not is_loopback(self.host):
            raise ValueError(
                f"auth.mode is off but host {self.host} is reachable from other machines; "
                "set auth.mode to on or auto (and hand out keys: corral users create), "
                "or set auth.allow_open: true to run it open on purpose"
            )
        return self

    @model_validator(mode="after")
    def _content_needs_the_journal(self) -> Settings:
        # Request content travels in the usage journal's lines, beside the usage row.
        if self.audit.content != "off" and not self.usage.journal:
            raise ValueError(
                f"audit.content is {self.audit.content} but usage.journal is false; request "
                "audit rows are written through the usage journal, so turn it on"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, policy: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        known = tuple(context.get("known_policies", DEFAULT_POLICIES))
        if policy not in known:
            raise ValueError(f"unknown policy; known: {', '.join(sorted(known))}")
        return policy

    @field_validator("routing")
    @classmethod
    def _known_group_policies(cls, routing: RoutingConfig, info: ValidationInfo) -> RoutingConfig:
        context = info.context if isinstance(info.context, dict) else {}
        known = tuple(context.get("known_policies", DEFAULT_POLICIES))
        for i, group in enumerate(routing.groups):
            if group.policy not in known:
                raise ValueError(
                    f"groups[{i}].policy {group.policy!r} is unknown; known: "
                    f"{', '.join(sorted(known))}"
                )
        # Options are checked by building the policies once (core's own registry).
        default = info.data.get("policy")
        checks = [("options", default if isinstance(default, str) else "", routing.options)]
        checks += [
            (f"groups[{i}].options", g.policy, g.options) for i, g in enumerate(routing.groups)
        ]
        for where, name, options in checks:
            if name in POLICIES:
                try:
                    make_policy(name, options)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
        return routing

    @field_validator("backends")
    @classmethod
    def _unique_names(cls, backends: list[BackendConfig]) -> list[BackendConfig]:
        first: dict[str, int] = {}
        for i, backend in enumerate(backends):
            if backend.name in first:
                raise ValueError(
                    f"duplicate backend name {backend.name!r} "
                    f"(backends[{first[backend.name]}] and backends[{i}]); give each a name="
                )
            first[backend.name] = i
        return backends

    @field_validator("models")
    @classmethod
    def _models_agree(
        cls, models: list[LogicalModelConfig], info: ValidationInfo
    ) -> list[LogicalModelConfig]:
        # Only configured backends are known here; one registered at run time cannot
        # be named in models[].backends, though it joins a model by name or alias.
        configured = info.data.get("backends")
        names = [b.name for b in configured] if configured is not None else None
        problems = _model_conflicts(models, names)
        if problems:
            raise ValueError("; ".join(problems))
        return models
