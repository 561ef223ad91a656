"""A live gateway for the identity API tests, on whichever store the test was given.

The key cache reloads only every 60 s here, so whatever takes effect at once in these
tests does so because the API reloaded it, not because the interval came round.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from corral.adapters.store import Store
from corral.adapters.store.keys import ADMIN_KEY_ENV
from corral.app.gateway import Gateway
from corral.sim.launch import NodeSpec
from tests.helpers import sim_fleet

__all__ = ["ENV_KEY", "MODEL", "OTHER_MODEL", "Api", "bearer", "eventually", "identity_api"]

ENV_KEY = "crl_" + "e" * 44
MODEL = "llama3.2:1b"
OTHER_MODEL = "qwen2.5:0.5b"


def bearer(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


@dataclass
class Api:
    """The running gateway, its store, and root: an admin made through the API itself."""

    url: str
    gw: Gateway
    store: Store
    root: str  # root's key (every scope)

    def client(self, key: str | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=bearer(key), timeout=30)

    async def call(
        self, method: str, path: str, key: str | None = None, body: Any = None
    ) -> httpx.Response:
        """One request as ``key`` (root by default)."""
        async with self.client(key or self.root) as client:
            if body is None:
                return await client.request(method, path)
            return await client.request(method, path, json=body)

    async def make_user(self, name: str, **fields: Any) -> str:
        """A user with a first key (options in ``key``); returns the key."""
        fields.setdefault("key", {})
        resp = await self.call("POST", "/admin/users", body={"name": name, **fields})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"]["key"])

    async def generate(self, key: str, model: str = MODEL) -> httpx.Response:
        body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 4}}
        async with self.client(key) as client:
            return await client.post("/api/generate", json=body)


@asynccontextmanager
async def identity_api(store: Store, tmp_path: Path) -> AsyncIterator[Api]:
    async with sim_fleet(
        NodeSpec(),
        store=store,
        data_dir=str(tmp_path),
        environ={ADMIN_KEY_ENV: ENV_KEY},
        auth={"mode": "on", "reload_s": 60},
        usage={"batch_s": 0.05},
    ) as fleet:
        async with httpx.AsyncClient(base_url=fleet.url, headers=bearer(ENV_KEY)) as client:
            made = await client.post(
                "/admin/users", json={"name": "root", "role": "admin", "key": {}}
            )
        assert made.status_code == 201, made.text
        yield Api(fleet.url, fleet.gw, store, made.json()["key"]["key"])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait (bounded) for an asynchronous condition the system reaches on its own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
