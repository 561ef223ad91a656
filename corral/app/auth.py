"""Who is asking: API keys on every inference and management endpoint.

`Auth` holds the key cache and keeps it fresh; `authenticate` is the pipeline stage
that turns ``Authorization: Bearer <key>`` into an `Identity` (or a 401/403 in the
client's dialect) and `check_model_access` refuses a model the key may not use.
Which endpoints need which scope:

- inference (generate, chat, embed, embeddings, show, /v1/*) and the model lists
  (/api/tags, /api/ps, /v1/models): ``inference``;
- model management (pull, push, create, copy, delete, blobs): ``admin`` or ``models``;
- ``GET /`` and ``/api/version`` stay open: Ollama clients call them before anything
  else, without credentials, and they reveal nothing about the fleet's models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from corral.adapters.store.db import Store
from corral.adapters.store.keycache import Identity, KeyCache, load_identities
from corral.adapters.store.keys import ADMIN_KEY_ENV, load_or_create_secret
from corral.app.limits import Limiter
from corral.app.pipeline import RequestContext
from corral.config import Settings
from corral.core.errors import CorralError, Forbidden, Unauthorized

__all__ = [
    "MANAGE_ENDPOINTS",
    "MIN_ADMIN_KEY",
    "Auth",
    "AuthStartError",
    "admin_key_from",
    "authenticate",
    "check_model_access",
    "database_url",
    "guard",
]

log = logging.getLogger("corral.auth")

MIN_ADMIN_KEY = 32
MANAGE_ENDPOINTS = frozenset(
    ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs")
)
_MANAGE_SCOPES = frozenset(("admin", "models"))
_MAX_KEY = 512  # longer is no key of ours: refused before any HMAC


class AuthStartError(Exception):
    """The gateway must not start as configured (the message says why)."""


def database_url(settings: Settings) -> str:
    return settings.database_url or f"sqlite+aiosqlite:///{settings.data_dir / 'corral.db'}"


def admin_key_from(environ: Mapping[str, str]) -> str | None:
    """CORRAL_ADMIN_KEY when set; refused when shorter than 32 characters."""
    key = environ.get(ADMIN_KEY_ENV)
    if not key:
        return None
    if len(key) < MIN_ADMIN_KEY:
        raise AuthStartError(
            f"{ADMIN_KEY_ENV} is {len(key)} characters; it must be at least {MIN_ADMIN_KEY} "
            "(e.g. crl_ followed by `openssl rand -hex 24`)"
        )
    return key


class Auth:
    """Whether keys are required, the key cache, and the task that reloads it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.auth.required(settings.host)
        self.keys: KeyCache | None = None
        self.store: Store | None = None
        self._secret: bytes | None = None
        self._reloader: asyncio.Task[None] | None = None
        self.limits = Limiter()  # rate limits and budgets: reloaded with the keys
        # One reload at a time: two overlapping ones could finish out of order and leave
        # the older snapshot in place (a key revoked by the API working again).
        self._reloading = asyncio.Lock()

    async def start(self, store: Store, environ: Mapping[str, str] | None = None) -> None:
        env_key = admin_key_from(os.environ if environ is None else environ)
        secret_file = self.settings.secret_file or Path(self.settings.data_dir) / "secret.key"
        secret = await asyncio.to_thread(load_or_create_secret, secret_file)
        self.store = store
        self._secret = secret
        self.keys = KeyCache(secret, env_key=env_key)
        await self.reload()
        if self.enabled:
            self._reloader = asyncio.create_task(self._reload_every(self.settings.auth.reload_s))
        log.warning(
            "authentication %s (auth.mode %s, host %s)%s",
            "ON: requests need Authorization: Bearer <key>" if self.enabled else "OFF",
            self.settings.auth.mode,
            self.settings.host,
            f"; {ADMIN_KEY_ENV} accepted" if env_key else "",
        )

    @property
    def server_secret(self) -> bytes:
        """The secret keys are digested with (loaded at start)."""
        if self._secret is None:
            raise RuntimeError("the gateway has not started: no server secret yet")
        return self._secret

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
            self._reloader = None
        if self.store is not None:
            try:
                await self.limits.flush(self.store)
            except Exception:
                log.exception("writing the last budget charges failed")

    async def reload(self) -> None:
        """Load every usable key and budget (call after each change the gateway makes)."""
        assert self.store is not None and self.keys is not None
        async with self._reloading:
            self.keys.replace(await load_identities(self.store, datetime.now(UTC)))
            await self.limits.reload(self.store)

    async def _reload_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Exception:  # the store is away: keep serving the keys we know
                log.exception("reloading the key cache failed; keeping the previous keys")

    def verify(self, authorization: bytes | None) -> Identity:
        """The identity a request's Authorization header speaks for (401 if none)."""
        if authorization is None:
            raise Unauthorized("missing API key: send the header Authorization: Bearer <key>")
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token or len(token) > _MAX_KEY:
            raise Unauthorized("malformed Authorization header: expected Bearer <key>")
        assert self.keys is not None
        found = self.keys.lookup(token.decode("latin-1"))
        if found is None:
            raise Unauthorized("invalid API key (unknown or revoked)")
        if found.expires_at is not None and time.time() >= found.expires_at:
            raise Unauthorized(f"API key {found.prefix} has expired")
        return found

    def identify(self, authorization: bytes | None, endpoint: str) -> Identity:
        """The identity a request's Authorization header speaks for, allowed ``endpoint``."""
        found = self.verify(authorization)
        if endpoint in MANAGE_ENDPOINTS:
            if not found.scopes & _MANAGE_SCOPES:
                raise Forbidden(
                    f"API key {found.prefix} may not manage models (needs the admin or "
                    "models scope)"
                )
        elif "inference" not in found.scopes:
            raise Forbidden(f"API key {found.prefix} lacks the inference scope")
        return found

    def check(self, headers: list[tuple[bytes, bytes]], endpoint: str) -> Identity | None:
        """`identify` from raw ASGI headers; None when auth is off."""
        if not self.enabled:
            return None
        value = None
        for name, raw in headers:
            if name == b"authorization":
                value = raw
                break
        return self.identify(value, endpoint)


async def authenticate(ctx: RequestContext) -> None:
    """Who is asking, before the body is read (401/403 in the client's dialect)."""
    auth = ctx.gw.auth
    if auth.enabled:
        ctx.identity = auth.check(ctx.scope["headers"], ctx.endpoint)


async def check_model_access(ctx: RequestContext) -> None:
    """A key with an allowed-models list may use only those models (403)."""
    found = ctx.identity
    if found is not None and not found.allows_model(ctx.model, ctx.requested_model):
        raise Forbidden(
            f'API key {found.prefix} may not use model "{ctx.requested_model or ctx.model}"',
            param="model",
        )


def guard(gw_auth: Auth, request: Request, endpoint: str) -> Response | None:
    """For the plain (non-pipeline) routes: None when allowed, else the error response."""
    try:
        gw_auth.check(request.scope["headers"], endpoint)
    except CorralError as exc:
        body = exc.body("openai" if request.url.path.startswith("/v1/") else "ollama")
        return Response(body, exc.status, headers=exc.headers(), media_type="application/json")
    return None
