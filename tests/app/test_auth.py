"""When keys are required, what a key makes of a request's tenant, and start-up refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from corral.adapters.store.keycache import Identity, KeyCache
from corral.app.pipeline import RequestContext
from corral.app.routing import request_info
from corral.config import ConfigError, load_settings


def settings(**overrides: Any) -> Any:
    return load_settings(None, environ={}, overrides=overrides)


@pytest.mark.parametrize(
    ("host", "mode", "required"),
    [
        ("127.0.0.1", "auto", False),
        ("::1", "auto", False),
        ("localhost", "auto", False),
        ("0.0.0.0", "auto", True),
        ("10.0.0.5", "auto", True),
        ("corral.example", "auto", True),
        ("127.0.0.1", "on", True),
        ("127.0.0.1", "off", False),
    ],
)
def test_auto_requires_keys_beyond_loopback(host: str, mode: str, required: bool) -> None:
    assert settings(host=host, auth={"mode": mode}).auth.required(host) is required


def test_auth_off_on_a_public_host_is_refused_unless_allowed_open() -> None:
    with pytest.raises(ConfigError, match="allow_open"):
        settings(host="0.0.0.0", auth={"mode": "off"})
    assert not settings(host="0.0.0.0", auth={"mode": "off", "allow_open": True}).auth.required(
        "0.0.0.0"
    )


def _ctx(identity: Identity | None, **tenants: Any) -> RequestContext:
    gw: Any = SimpleNamespace(settings=settings(tenants=tenants))
    scope = {"headers": [(b"x-corral-tenant", b"mallory")], "client": ("10.1.1.1", 5)}
    ctx = RequestContext(gw, scope, None, None, "/api/generate", "ollama", "r1", 0.0)  # type: ignore[arg-type]
    ctx.identity = identity
    ctx.model = "m:latest"
    return ctx


def _who(user: str | None, group: str | None, weight: float | None) -> Identity:
    return Identity(user, group, "user", frozenset({"inference"}), None, None, "abcd1234", weight)


def test_with_a_key_the_user_is_the_tenant_and_the_header_is_ignored() -> None:
    info = request_info(_ctx(_who("alice", "faculty", 3.0)))
    assert (info.tenant, info.weight) == ("alice", 3.0)
    assert request_info(_ctx(None)).tenant == "mallory"


def test_weight_and_priority_fall_back_from_store_to_settings() -> None:
    tenants = {"weights": {"faculty": 2.0}, "priorities": {"faculty": 1}, "default_weight": 0.5}
    info = request_info(_ctx(_who("alice", "faculty", None), **tenants))
    assert (info.weight, info.priority) == (2.0, 1)
    tenants["priorities"] = {"alice": 2, "faculty": 1}
    assert request_info(_ctx(_who("alice", "faculty", None), **tenants)).priority == 2
    info = request_info(_ctx(_who("bob", None, None), **tenants))
    assert (info.weight, info.priority) == (0.5, 0)


def test_the_key_cache_remembers_digests_and_serves_the_env_key() -> None:
    cache = KeyCache(b"s" * 32, env_key="crl_" + "e" * 40)
    assert cache.lookup("crl_" + "e" * 40) is not None
    assert cache.lookup("crl_" + "e" * 40).user is None  # type: ignore[union-attr]
    who = _who("alice", None, None)
    cache.replace({cache.digest("k1"): who})
    assert cache.lookup("k1") is who
    assert cache.lookup("k2") is None
    cache.replace({})  # revoked: gone at the next lookup, remembered digest or not
    assert cache.lookup("k1") is None
    assert cache.lookup("crl_" + "e" * 40) is not None


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    return subprocess.run(
        [sys.executable, "-m", "corral", "serve", "--port", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "CORRAL_DATA_DIR": str(tmp_path), **env},
    )


def test_a_short_admin_key_refuses_to_start(tmp_path: Path) -> None:
    result = _serve(tmp_path, CORRAL_ADMIN_KEY="crl_too_short")
    assert result.returncode == 2
    assert "CORRAL_ADMIN_KEY" in result.stderr and "at least 32" in result.stderr
    assert "crl_too_short" not in result.stderr  # never echoed


def test_an_open_gateway_on_a_public_host_refuses_to_start(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--host", "0.0.0.0", CORRAL_AUTH__MODE="off")
    assert result.returncode == 2
    assert "allow_open" in result.stderr
