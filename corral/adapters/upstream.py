"""The one seam between the gateway and a backend: ``send(request) -> response``.

``HttpTransport`` speaks HTTP to one backend: POSTs to a plain-http backend (every
inference call) over `RawPool`'s lean keep-alive connections, everything else over a
pooled aiohttp session.
Tests may plug any object with the same ``send`` method in its place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Protocol

import aiohttp

from corral.adapters.rawstream import RawPool

__all__ = [
    "HttpTransport",
    "Transport",
    "UpstreamConnectError",
    "UpstreamRequest",
    "UpstreamResponse",
]


class UpstreamConnectError(Exception):
    """The request never reached a working backend (refused, DNS, connect timeout).

    ``backend_down`` is false when only a pooled connection had gone stale.
    """

    def __init__(self, message: str, *, backend_down: bool = True) -> None:
        super().__init__(message)
        self.backend_down = backend_down


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    path: str
    body: bytes | IO[bytes] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    query: str = ""


class UpstreamResponse(Protocol):
    status: int

    @property
    def content_type(self) -> str: ...

    def header(self, name: str) -> str | None: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in whatever pieces the network gives."""
        ...

    async def read(self) -> bytes: ...

    def close(self) -> None:
        """Release the connection (it is dropped, not reused, if the body was not read)."""
        ...


class _AiohttpResponse:
    __slots__ = ("_resp", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status

    @property
    def content_type(self) -> str:
        return self._resp.headers.get("Content-Type", "application/json")

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()

    async def read(self) -> bytes:
        return await self._resp.read()

    def close(self) -> None:
        self._resp.release()


class Transport(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class HttpTransport:
    """Pooled keep-alive HTTP to one backend base URL.

    ``headers`` go with every request to this backend (the fleet token a node agent's
    relay asks for), set once here so no request path has to know about them.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._connect_timeout = connect_timeout
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._raw = (
            RawPool(self.base_url, connect_timeout=connect_timeout, headers=self._headers)
            if self.base_url.startswith("http://")
            else None
        )

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so the session binds to the running loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=0,  # Corral's own slots bound concurrency, not the pool.
                keepalive_timeout=30,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._connect_timeout, sock_read=None
                ),
            )
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if self._closed:
            # Its backend was removed: a probe or request begun before that must not
            # open connections (and a session) nothing would ever close.
            raise UpstreamConnectError("the backend was removed from the fleet")
        if (
            self._raw is not None
            and request.method == "POST"
            and isinstance(request.body, bytes)
            and not request.query
        ):
            # Every inference call, whole or streamed: the lean path costs far less
            # CPU than aiohttp's client. Probes (GET) keep aiohttp.
            return await self._send_raw(self._raw, request)
        url = self.base_url + request.path
        if request.query:
            url += "?" + request.query
        try:
            resp = await self._get_session().request(
                request.method, url, data=request.body, headers=request.headers
            )
        except (aiohttp.ClientConnectorError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamConnectError(str(exc) or type(exc).__name__) from exc
        except aiohttp.ServerDisconnectedError as exc:
            # A pooled connection the backend had closed; the request never ran.
            raise UpstreamConnectError("backend closed the connection", backend_down=False) from exc
        return _AiohttpResponse(resp)

    async def _send_raw(self, pool: RawPool, request: UpstreamRequest) -> UpstreamResponse:
        try:
            conn = await pool.connect()
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(str(exc) or type(exc).__name__) from exc
        assert isinstance(request.body, bytes)
        try:
            return await pool.request(
                conn, request.method, request.path, request.body, request.headers
            )
        except ConnectionError as exc:
            # A pooled connection the backend had closed; the request never ran.
            raise UpstreamConnectError("backend closed the connection", backend_down=False) from exc

    async def close(self) -> None:
        self._closed = True
        if self._raw is not None:
            self._raw.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
