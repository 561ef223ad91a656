"""The agent's relay: a small reverse proxy in front of an engine bound to localhost.

For hosts whose engine listens on 127.0.0.1 only (Ollama's default): the agent
listens on a reachable address and passes requests through to the engine, streaming
both ways chunk by chunk (nothing is buffered, so a streamed answer arrives as the
engine writes it). Only requests carrying the fleet token in ``X-Corral-Fleet-Token``
are forwarded; the token is taken off before the engine sees the request. So exposing
the relay does not expose the engine.

Forwarded paths: ``/``, ``/api/*``, ``/v1/*``, ``/metrics``, ``/version``, ``/health``
(the Ollama and OpenAI APIs and the endpoints the gateway probes). Anything else is
404 without touching the engine.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from corral.config.fleet import FLEET_TOKEN_HEADER

__all__ = ["Relay"]

log = logging.getLogger("corral.agent.relay")

_PREFIXES = ("/api/", "/v1/")
_PATHS = frozenset({"/", "/metrics", "/version", "/health"})
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, never forwarded.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
_DROP = _HOP | {FLEET_TOKEN_HEADER.lower()}


class Relay:
    """Serves on ``host:port`` (port 0 = any; `url` says which) and forwards to ``engine``."""

    def __init__(self, engine: str, token: str, *, host: str, port: int) -> None:
        self.engine = engine.rstrip("/")
        self._token = token.encode()
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = port

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,  # bytes pass through as the engine encoded them
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A client that leaves cancels the handler, which drops the engine's request.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path not in _PATHS and not path.startswith(_PREFIXES):
            return _error(404, f"the relay does not forward {path}")
        presented = request.headers.get(FLEET_TOKEN_HEADER, "").encode("utf-8", "replace")
        if not presented or not hmac.compare_digest(presented, self._token):
            return _error(401, f"the relay needs the fleet token in {FLEET_TOKEN_HEADER}")
        assert self._session is not None
        # The fleet token stops here: the engine never sees it.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        body = _body(request) if request.body_exists else None
        out: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method,
                self.engine + request.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            ) as upstream:
                out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for k, v in upstream.headers.items():
                    if k.lower() not in _HOP:
                        out.headers.add(k, v)
                await out.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
        except aiohttp.ClientError as exc:
            if out is None:
                return _error(502, f"the relay cannot reach the engine: {exc}")
            # The engine broke off mid-answer: break off too, so the gateway sees a cut
            # stream (as it would from the engine itself), not a finished one.
            if request.transport is not None:
                request.transport.close()
            return out


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
