"""Fetching image URLs for backends that take only image bytes, without becoming an SSRF.

An OpenAI client may send ``{"type": "image_url", "image_url": {"url": "https://..."}}``;
Ollama wants base64 bytes, so the gateway fetches the URL itself. The URL comes from
the client, so every hop (the first URL and each redirect) is checked the same way:

1. scheme http or https, no credentials, host on ``images.allowed_hosts`` if set;
2. the host is resolved here and every address it resolves to must be public
   (``images.allow_private`` relaxes private, loopback and link-local only);
3. the connection goes only to those vetted addresses: `PinnedResolver` hands them
   to aiohttp, so a DNS answer that changes between check and connect (rebinding)
   is never consulted;
4. redirects are followed by hand, up to ``images.max_redirects``.

The body must be an image (``image/*``, or PNG/JPEG/GIF/WebP magic bytes when the
type is missing or generic) no larger than ``images.max_bytes``; the whole fetch is
bounded by ``images.timeout_s``. Every refusal is a `BadRequest` naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from corral.config.models import ImagesConfig
from corral.core.canonical import Message
from corral.core.errors import BadRequest, CorralError

__all__ = [
    "ImageFetcher",
    "PinnedResolver",
    "Resolve",
    "address_problem",
    "image_kind",
    "system_resolve",
]

Resolve = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> IP addresses``: how a host name is looked up before it is vetted."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Types servers send when they do not know what a file is; the bytes decide then.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
# Address kinds allow_private lets through. Unspecified (0.0.0.0 reaches this host on
# Linux), multicast and reserved are never a real image server, so they stay refused.
_PRIVATE_KINDS = frozenset({"private", "loopback", "link-local", "non-global"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
# inet_aton's forms: one to four decimal, octal or hex parts (127.1, 0x7f.0.0.1, 017700000001).
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)
_CHUNK = 64 * 1024
_PARALLEL = 4  # image fetches at once per request

# The vetted addresses for the hop the current task is making, by host name.
_PINS: contextvars.ContextVar[dict[str, list[ResolveResult]] | None] = contextvars.ContextVar(
    "corral_image_pins", default=None
)


def address_problem(address: str) -> str | None:
    """What makes an IP address unfit to fetch from (``"loopback"``, ...), or None.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, 6to4, NAT64)
    are judged by that IPv4 address, since that is where the packets end up.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unparseable"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return address_problem(str(inner))
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "unspecified"
    for kind, hit in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if hit:
            return kind
    # Shared address space (100.64.0.0/10) and the like: not private, not public.
    return None if ip.is_global else "non-global"


def image_kind(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"gif"`` or ``"webp"`` by the first bytes, else None."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host``, each once, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for image fetches: answers only with addresses already vetted.

    The fetcher vets a host, then sets the pins for its own task; aiohttp asks this
    resolver from that same task while connecting. A host without pins is refused,
    so a lookup can never happen behind the fetcher's back.
    """

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pinned = (_PINS.get() or {}).get(host)
        if not pinned:
            raise OSError(f"{host} was not vetted for this fetch")
        wanted = [r for r in pinned if family in (socket.AF_UNSPEC, r["family"])]
        return [{**r, "port": port} for r in wanted]

    async def close(self) -> None:
        pass


def _pin(host: str, addresses: Iterable[str]) -> list[ResolveResult]:
    out: list[ResolveResult] = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        out.append(
            {
                "hostname": host,
                "host": address,
                "port": 0,
                "family": family,
                "proto": 0,
                # Numeric, so nothing downstream looks the address up again.
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
        )
    return out


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class ImageFetcher:
    """Fetches client-given image URLs safely; one pooled session, made on first use."""

    def __init__(
        self, config: ImagesConfig | None = None, *, resolve: Resolve | None = None
    ) -> None:
        self.config = config or ImagesConfig()
        self._resolve = resolve or system_resolve
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def fetch(self, url: str, *, param: str) -> str:
        """The image at ``url`` as base64, or a BadRequest naming ``param``."""
        if not self.config.fetch_urls:
            raise _not_fetching(param)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                data = await self._fetch_bytes(url, param)
        except TimeoutError:
            raise BadRequest(
                f"{param}: fetching the image timed out after {self.config.timeout_s:g} s",
                param=param,
            ) from None
        return base64.b64encode(data).decode("ascii")

    async def fetch_all(self, messages: list[Message], *, param_prefix: str = "messages") -> None:
        """Fetch every message's ``image_urls`` into its ``images``, in order.

        At most four fetches run at once; the same URL is fetched once. On any
        failure the first error is raised and no message is changed.
        """
        todo: dict[str, str] = {}  # url -> param of its first mention
        for i, m in enumerate(messages):
            # The canonical message no longer knows part positions; guess the usual
            # layout: a text part (when there is text), inline images, then the URLs.
            first = (1 if m.content else 0) + len(m.images)
            for k, url in enumerate(m.image_urls):
                todo.setdefault(url, f"{param_prefix}[{i}].content[{first + k}].image_url")
        if not todo:
            return
        if not self.config.fetch_urls:
            raise _not_fetching(next(iter(todo.values())))  # the first URL, every time
        gate = asyncio.Semaphore(_PARALLEL)
        fetched: dict[str, str] = {}

        async def one(url: str, param: str) -> None:
            async with gate:
                fetched[url] = await self.fetch(url, param=param)

        try:
            async with asyncio.TaskGroup() as group:
                for url, param in todo.items():
                    group.create_task(one(url, param))
        except BaseExceptionGroup as errors:
            raise _first_client_error(errors) from None
        for m in messages:
            m.images.extend(fetched[url] for url in m.image_urls)
            m.image_urls.clear()

    # --- one fetch, hop by hop ----------------------------------------------------

    def _session_for_fetching(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=PinnedResolver(),
                use_dns_cache=False,  # each hop's vetted answer, never an older one
                limit=64,
            )
            # No proxy (it would make the address checks meaningless), no cookie jar (one
            # client's cookies must not ride along on another's fetch), no decompression
            # (the size limit counts the bytes kept); fetch() bounds the time.
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={
                    "User-Agent": "Corral image fetcher",
                    "Accept": "image/*",
                    "Accept-Encoding": "identity",
                },
            )
        return self._session

    async def _fetch_bytes(self, url: str, param: str) -> bytes:
        target = self._check_url(url, param)
        for _ in range(self.config.max_redirects + 1):
            host = target.raw_host or ""
            pins = await self._vet(target, param)
            token = _PINS.set(pins)
            try:
                async with self._session_for_fetching().get(target, allow_redirects=False) as resp:
                    if resp.status not in _REDIRECTS:
                        return await self._read(resp, param)
                    location = resp.headers.get("Location", "")
                    if not location:
                        raise BadRequest(
                            f"{param}: the image server redirected without a Location",
                            param=param,
                        )
                    try:
                        next_url = resp.url.join(URL(location))
                    except ValueError:
                        raise BadRequest(
                            f"{param}: the image server redirected to an invalid URL",
                            param=param,
                        ) from None
            except aiohttp.ClientError as exc:
                raise BadRequest(
                    f"{param}: could not fetch the image from {host}: {_why(exc)}", param=param
                ) from None
            finally:
                _PINS.reset(token)
            target = self._check_url(str(next_url), param, redirected=True)
        raise BadRequest(
            f"{param}: the image URL redirected more than {self.config.max_redirects} times",
            param=param,
        )

    def _check_url(self, text: str, param: str, *, redirected: bool = False) -> URL:
        where = "redirected to" if redirected else "is"
        try:
            url = URL(text)
        except (ValueError, TypeError):
            raise BadRequest(f"{param}: the image URL is not a valid URL", param=param) from None
        if url.scheme not in ("http", "https"):
            shown = f"{url.scheme}:" if url.scheme else "a relative URL"
            raise BadRequest(
                f"{param}: the image URL {where} {shown}; only http and https are fetched",
                param=param,
            )
        host = url.host or ""
        # One trailing dot is a fully qualified name; any other empty label is junk.
        if not host or "" in host.removesuffix(".").split("."):
            raise BadRequest(f"{param}: the image URL has no valid host", param=param)
        if url.user is not None or url.password is not None:
            raise BadRequest(
                f"{param}: image URLs must not carry credentials (user:password@)", param=param
            )
        allowed = self.config.allowed_hosts
        if allowed and not _host_allowed({host, url.raw_host or ""}, allowed):
            raise BadRequest(
                f"{param}: the image URL {where} host {host!r}, "
                "which is not on this gateway's list of image hosts",
                param=param,
            )
        return url.with_fragment(None)

    async def _vet(self, url: URL, param: str) -> dict[str, list[ResolveResult]]:
        """Refuse unless every address of the URL's host may be fetched; the pins to use."""
        host, raw = url.host or "", url.raw_host or ""
        literal = _ip_literal(host)
        if literal is not None:
            self._check_addresses(host, [str(literal)], param, literal=True)
            return {}  # aiohttp connects to an IP literal without asking a resolver
        if ":" in raw or _NUMERIC_HOST.match(raw.removesuffix(".")):
            # aiohttp connects to such hosts without asking the resolver, and the C
            # library reads 127.1, 2130706433 or 0x7f.1 as addresses: all refused here.
            raise BadRequest(
                f"{param}: the image URL host {host!r} is not a canonical IP address",
                param=param,
            )
        try:
            addresses = await self._resolve(raw, url.port or 0)
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise BadRequest(f"{param}: the image host {host!r} could not be resolved", param=param)
        self._check_addresses(host, addresses, param, literal=False)
        return {raw: _pin(raw, addresses)}

    def _check_addresses(
        self, host: str, addresses: Sequence[str], param: str, *, literal: bool
    ) -> None:
        for address in addresses:
            kind = address_problem(address)
            if kind is None or (self.config.allow_private and kind in _PRIVATE_KINDS):
                continue
            # A resolved address is not echoed: it could map an internal DNS zone.
            what = f"{address!r} is" if literal else f"host {host!r} resolves to"
            article = "an" if kind[0] in "aeiou" else "a"
            raise BadRequest(
                f"{param}: the image URL {what} {article} {kind} address; "
                "this gateway fetches images only from public addresses",
                param=param,
            )

    async def _read(self, resp: aiohttp.ClientResponse, param: str) -> bytes:
        if resp.status >= 300 or resp.status < 200:
            raise BadRequest(f"{param}: the image server answered HTTP {resp.status}", param=param)
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise BadRequest(
                f"{param}: the image was sent compressed ({encoding}); "
                "only uncompressed images are accepted",
                param=param,
            )
        ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if not ctype.startswith("image/") and ctype not in _GENERIC_TYPES:
            raise BadRequest(f"{param}: the URL is not an image ({ctype})", param=param)
        limit = self.config.max_bytes
        too_large = BadRequest(
            f"{param}: the image is larger than the {limit} byte limit", param=param
        )
        if resp.content_length is not None and resp.content_length > limit:
            raise too_large
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > limit:
                raise too_large  # stop reading; leaving the block drops the connection
        if not body:
            raise BadRequest(f"{param}: the image URL gave an empty body", param=param)
        if not ctype.startswith("image/") and image_kind(bytes(body[:16])) is None:
            shown = ctype or "no Content-Type"
            raise BadRequest(
                f"{param}: the URL is not an image ({shown}, and not PNG, JPEG, GIF or WebP)",
                param=param,
            )
        return bytes(body)


def _not_fetching(param: str) -> BadRequest:
    return BadRequest(
        f"{param}: this gateway does not fetch image URLs (images.fetch_urls is off); "
        "send the image inline as a base64 data: URI",
        param=param,
    )


def _host_allowed(spellings: set[str], allowed: Sequence[str]) -> bool:
    """Whether a host, as written or as its punycode, is on the allow-list."""
    for host in {h.rstrip(".") for h in spellings if h}:
        for entry in allowed:
            if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
                return True
    return False


def _why(exc: aiohttp.ClientError) -> str:
    # aiohttp's own text names the connection key and OS details; keep it short.
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS failed (certificate or handshake)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the body was cut short or malformed"
    return type(exc).__name__


def _first_client_error(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in errors.exceptions:
        if isinstance(exc, CorralError):
            return exc
    return errors
