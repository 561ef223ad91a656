"""The image fetcher against real servers on 127.0.0.1; nothing leaves this host.

Fetching works at all only with ``allow_private`` (the servers are on loopback), so
most tests turn it on; the default refusals are shown on the same URLs. Public
addresses are judged by the pure classifier, never by connecting anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from corral.adapters.images import ImageFetcher, PinnedResolver, address_problem, image_kind
from corral.config.models import ImagesConfig
from corral.core.canonical import Message
from corral.core.errors import BadRequest

P = "messages[0].content[0].image_url"


def _png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


PNG = _png()
MAGIC = {
    "png": PNG,
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32),
    "gif": b"GIF89a\x01\x00\x01\x00" + bytes(32),
    "webp": b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(32),
    "text": b"hello, this is not an image at all",
}
LIMIT = 1024  # max_bytes in the size tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# --- servers -----------------------------------------------------------------------


@dataclass
class ImageServer:
    port: int
    hits: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _app(state: ImageServer) -> web.Application:
    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        state.hits.append(request.path_qs)
        return await handler(request)  # type: ignore[no-any-return]

    async def png(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def octet(request: web.Request) -> web.Response:
        return web.Response(
            body=MAGIC[request.match_info["kind"]], content_type="application/octet-stream"
        )

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>no</html>", content_type="text/html")

    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="image/png")

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=zlib.compress(PNG),
            headers={"Content-Type": "image/png", "Content-Encoding": "gzip"},
        )

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def redirect(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        # Relative Locations, as many servers send them.
        raise web.HTTPFound(f"/r/{n - 1}" if n > 1 else "/png")

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["u"])

    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=302)

    async def big(request: web.Request) -> web.StreamResponse:
        # Announces far more than the limit, then holds: only a Content-Length check
        # can answer before the timeout.
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = 100 * LIMIT
        await resp.prepare(request)
        await resp.write(PNG[:8])
        await state.release.wait()
        return resp

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(64):
                await resp.write(PNG[:8] + bytes(LIMIT // 4))
        except ConnectionError:
            pass  # the fetcher hung up at its limit, as it should
        return resp

    async def slow(request: web.Request) -> web.Response:
        await state.release.wait()
        return web.Response(body=PNG, content_type="image/png")

    async def gate(request: web.Request) -> web.Response:
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            await state.release.wait()
        finally:
            state.in_flight -= 1
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application(middlewares=[count])
    app.router.add_get("/png", png)
    app.router.add_get("/octet/{kind}", octet)
    app.router.add_get("/html", html)
    app.router.add_get("/empty", empty)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/r/{n}", redirect)
    app.router.add_get("/to", to)
    app.router.add_get("/no-location", no_location)
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/slow", slow)
    app.router.add_get("/gate", gate)
    return app


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    state = ImageServer(port=free_port())
    runner = web.AppRunner(_app(state), shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", state.port).start()
    yield state
    state.release.set()  # let held handlers finish so the server stops cleanly
    await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[int]:
    """HTTP/1.0-style replies: no Content-Length, no Content-Type, body ends at close."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = PNG if b"GET /small " in head else PNG + bytes(4 * LIMIT)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()


@pytest.fixture
async def fetchers() -> AsyncIterator[Callable[..., ImageFetcher]]:
    made: list[ImageFetcher] = []

    def make(resolve: Any = None, **config: Any) -> ImageFetcher:
        fetcher = ImageFetcher(ImagesConfig(**config), resolve=resolve)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.close()


async def refused(fetcher: ImageFetcher, url: str, *, param: str = P) -> str:
    with pytest.raises(BadRequest) as excinfo:
        await fetcher.fetch(url, param=param)
    err = excinfo.value
    assert err.param == param and err.message.startswith(f"{param}: ")
    assert err.status == 400
    return err.message


class Lookups:
    """A name table standing in for DNS, so made-up names never reach a real resolver."""

    def __init__(self, *answers: list[str], table: dict[str, list[str]] | None = None):
        self.answers: Iterator[list[str]] = iter(answers)
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if self.table is not None:
            if host not in self.table:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return self.table[host]
        return next(self.answers)


# --- fetching, and the default refusal of the same URL -------------------------------


async def test_loopback_server_is_fetched_only_when_private_targets_are_allowed(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    b64 = await fetchers(allow_private=True).fetch(server.url("/png"), param=P)
    assert base64.b64decode(b64) == PNG
    assert server.hits == ["/png"]
    message = await refused(fetchers(), server.url("/png"))
    assert "'127.0.0.1' is a loopback address" in message
    assert server.hits == ["/png"]  # refused before connecting


async def test_a_name_that_resolves_to_loopback_is_refused(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    message = await refused(fetchers(), server.url("/png", host="localhost"))
    assert "host 'localhost' resolves to a loopback address" in message
    assert "127.0.0.1" not in message  # resolved addresses are not echoed
    assert server.hits == []


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:169.254.169.254]", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("[::]", "unspecified"),
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
async def test_literal_non_public_addresses_are_refused_without_connecting(
    host: str, kind: str, fetchers: Callable[..., ImageFetcher]
) -> None:
    message = await refused(fetchers(), f"http://{host}:9/x.png")
    assert f" {kind} address" in message


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "224.0.0.1", "240.0.0.1"])
async def test_unspecified_multicast_and_reserved_stay_refused_with_private_allowed(
    host: str, server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    # 0.0.0.0 would reach this very host on Linux; allow_private must not open it.
    await refused(fetchers(allow_private=True), f"http://{host}:{server.port}/png")
    assert server.hits == []


@pytest.mark.parametrize(
    "host", ["127.1", "2130706433", "0127.0.0.1", "0x7f.0.0.1", "0X7F000001", "127.0.0.1."]
)
async def test_odd_spellings_of_loopback_are_refused_without_a_lookup(
    host: str, server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    lookups = Lookups(table={})
    message = await refused(fetchers(resolve=lookups, allow_private=True), server.url("/png", host))
    assert "is not a canonical IP address" in message
    assert lookups.calls == [] and server.hits == []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///etc/passwd", "is file:; only http and https"),
        ("ftp://127.0.0.1/x.png", "is ftp:; only http and https"),
        ("gopher://127.0.0.1:70/", "is gopher:;"),
        ("/relative.png", "a relative URL"),
        ("http://user:pw@127.0.0.1:9/x.png", "must not carry credentials"),
        ("http:///x.png", "no valid host"),
        ("http://a..b/x.png", "no valid host"),
        ("http://images.example.com../x.png", "no valid host"),
        ("http://127.0.0.1:99999/x.png", "not a valid URL"),
    ],
)
async def test_bad_urls_are_refused(
    url: str, says: str, fetchers: Callable[..., ImageFetcher]
) -> None:
    assert says in await refused(fetchers(allow_private=True), url)


async def test_an_unresolvable_host_is_refused(fetchers: Callable[..., ImageFetcher]) -> None:
    fetcher = fetchers(resolve=Lookups(table={}))
    assert "could not be resolved" in await refused(fetcher, "https://nowhere.test/x.png")


async def test_a_closed_port_is_a_clear_error(fetchers: Callable[..., ImageFetcher]) -> None:
    message = await refused(fetchers(allow_private=True), f"http://127.0.0.1:{free_port()}/x")
    assert message.endswith("could not fetch the image from 127.0.0.1: connection failed")


# --- resolving once, connecting to what was vetted ------------------------------------


async def test_the_connection_goes_to_the_vetted_address_without_a_second_lookup(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    lookups = Lookups(table={"images.test": ["127.0.0.1"]})
    fetcher = fetchers(resolve=lookups, allow_private=True)
    b64 = await fetcher.fetch(f"http://images.test:{server.port}/png", param=P)
    assert base64.b64decode(b64) == PNG
    # One lookup, by the fetcher; aiohttp connected through the pins, not its own DNS.
    assert lookups.calls == [("images.test", server.port)]


async def test_every_redirect_hop_is_looked_up_and_vetted_again(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    lookups = Lookups(table={"images.test": ["127.0.0.1"]})
    fetcher = fetchers(resolve=lookups, allow_private=True)
    await fetcher.fetch(f"http://images.test:{server.port}/r/2", param=P)
    assert lookups.calls == [("images.test", server.port)] * 3
    assert server.hits == ["/r/2", "/r/1", "/png"]


async def test_a_name_that_rebinds_between_hops_is_caught(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    lookups = Lookups(["127.0.0.1"], ["0.0.0.0"])
    fetcher = fetchers(resolve=lookups, allow_private=True)
    message = await refused(fetcher, f"http://rebind.test:{server.port}/r/1")
    assert "host 'rebind.test' resolves to an unspecified address" in message
    assert server.hits == ["/r/1"]


async def test_one_bad_address_among_good_ones_refuses_the_host(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    lookups = Lookups(["127.0.0.1", "0.0.0.0"])
    await refused(
        fetchers(resolve=lookups, allow_private=True), f"http://mixed.test:{server.port}/png"
    )
    assert server.hits == []


async def test_the_pinned_resolver_refuses_hosts_nobody_vetted() -> None:
    resolver = PinnedResolver()
    with pytest.raises(OSError, match="not vetted"):
        await resolver.resolve("example.com", 443)


# --- redirects ---------------------------------------------------------------------


async def test_redirects_up_to_the_limit_are_followed(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    b64 = await fetchers(allow_private=True, max_redirects=3).fetch(server.url("/r/3"), param=P)
    assert base64.b64decode(b64) == PNG
    assert server.hits == ["/r/3", "/r/2", "/r/1", "/png"]


async def test_one_redirect_too_many_is_refused(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    message = await refused(fetchers(allow_private=True, max_redirects=3), server.url("/r/4"))
    assert "redirected more than 3 times" in message
    assert len(server.hits) == 4
    await refused(fetchers(allow_private=True, max_redirects=0), server.url("/r/1"))


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("file:///etc/passwd", "redirected to file:"),
        ("ftp://127.0.0.1/x.png", "redirected to ftp:"),
        ("http://0.0.0.0:{port}/png", "'0.0.0.0' is an unspecified address"),
        ("http://[::]:{port}/png", "'::' is an unspecified address"),
    ],
)
async def test_a_redirect_to_a_forbidden_target_is_refused(
    target: str, says: str, server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    url = server.url("/to?u=" + target.format(port=server.port).replace(":", "%3A"))
    message = await refused(fetchers(allow_private=True), url)
    assert says in message
    assert len(server.hits) == 1


async def test_a_redirect_to_loopback_off_the_allow_list_is_refused(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    fetcher = fetchers(allow_private=True, allowed_hosts=["127.0.0.1"])
    assert await fetcher.fetch(server.url("/r/1"), param=P)
    server.hits.clear()
    target = f"http%3A//localhost%3A{server.port}/png"
    message = await refused(fetcher, server.url(f"/to?u={target}"))
    assert "redirected to host 'localhost', which is not on" in message
    assert len(server.hits) == 1


async def test_a_redirect_without_location_is_refused(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    assert "without a Location" in await refused(
        fetchers(allow_private=True), server.url("/no-location")
    )


# --- the allow-list ----------------------------------------------------------------


async def test_hosts_off_the_allow_list_are_refused_before_any_lookup(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    lookups = Lookups(table={})
    fetcher = fetchers(resolve=lookups, allow_private=True, allowed_hosts=["images.example.com"])
    message = await refused(fetcher, server.url("/png"))
    assert "host '127.0.0.1', which is not on this gateway's list" in message
    assert await refused(fetcher, "https://evil.example.com/x.png")
    assert lookups.calls == [] and server.hits == []


async def test_a_wildcard_allows_subdomains_only(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    lookups = Lookups(table={"img.lab.test": ["127.0.0.1"], "lab.test": ["127.0.0.1"]})
    fetcher = fetchers(resolve=lookups, allow_private=True, allowed_hosts=["*.lab.test"])
    assert await fetcher.fetch(f"http://IMG.lab.test:{server.port}/png", param=P)
    await refused(fetcher, f"http://lab.test:{server.port}/png")
    await refused(fetcher, f"http://evillab.test:{server.port}/png")
    assert server.hits == ["/png"]


async def test_the_allow_list_does_not_lift_the_address_checks(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    fetcher = fetchers(allowed_hosts=["127.0.0.1"])
    assert "loopback" in await refused(fetcher, server.url("/png"))


# --- size, time, status, type --------------------------------------------------------


async def test_a_content_length_over_the_limit_is_refused_before_reading(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    # The body never arrives: only the header check can answer within the timeout.
    fetcher = fetchers(allow_private=True, max_bytes=LIMIT, timeout_s=5)
    assert f"larger than the {LIMIT} byte limit" in await refused(fetcher, server.url("/big"))


async def test_a_chunked_body_is_cut_off_at_the_limit(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    fetcher = fetchers(allow_private=True, max_bytes=LIMIT)
    assert "larger than" in await refused(fetcher, server.url("/chunked"))


async def test_a_body_without_content_length_is_cut_off_at_the_limit(
    raw_server: int, fetchers: Callable[..., ImageFetcher]
) -> None:
    fetcher = fetchers(allow_private=True, max_bytes=LIMIT)
    assert "larger than" in await refused(fetcher, f"http://127.0.0.1:{raw_server}/big")
    # A small one from the same server, also untyped, is sniffed as PNG and kept.
    b64 = await fetcher.fetch(f"http://127.0.0.1:{raw_server}/small", param=P)
    assert base64.b64decode(b64) == PNG


async def test_a_slow_server_times_out(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    fetcher = fetchers(allow_private=True, timeout_s=0.2)
    assert "timed out after 0.2 s" in await refused(fetcher, server.url("/slow"))


@pytest.mark.parametrize("code", [400, 403, 404, 500, 503])
async def test_an_error_status_is_refused(
    code: int, server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    message = await refused(fetchers(allow_private=True), server.url(f"/status/{code}"))
    assert message.endswith(f"the image server answered HTTP {code}")


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/html", "is not an image (text/html)"),
        ("/octet/text", "not PNG, JPEG, GIF or WebP"),
        ("/empty", "empty body"),
        ("/gzip", "sent compressed (gzip)"),
    ],
)
async def test_what_is_not_a_plain_image_is_refused(
    path: str, says: str, server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    assert says in await refused(fetchers(allow_private=True), server.url(path))


@pytest.mark.parametrize("kind", ["png", "jpeg", "gif", "webp"])
async def test_a_generic_type_is_sniffed(
    kind: str, server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    b64 = await fetchers(allow_private=True).fetch(server.url(f"/octet/{kind}"), param=P)
    assert base64.b64decode(b64) == MAGIC[kind]


# --- fetch_all ---------------------------------------------------------------------


async def test_fetch_all_appends_in_order_and_clears_the_urls(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    inline = base64.b64encode(b"inline").decode()
    png, gif = server.url("/png"), server.url("/octet/gif")
    messages = [
        Message("system", "be brief"),
        Message("user", "look", images=[inline], image_urls=[gif, png]),
        Message("user", "again", image_urls=[png]),
    ]
    await fetchers(allow_private=True).fetch_all(messages)
    assert [[base64.b64decode(i) for i in m.images] for m in messages] == [
        [],
        [b"inline", MAGIC["gif"], PNG],
        [PNG],
    ]
    assert all(m.image_urls == [] for m in messages)
    assert sorted(server.hits) == ["/octet/gif", "/png"]  # the repeated URL once


async def test_fetch_all_names_the_failing_part_and_changes_nothing(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    messages = [
        Message("user", "fine", image_urls=[server.url("/png")]),
        Message("user", "look", images=["aW5saW5l"], image_urls=[server.url("/html")]),
    ]
    with pytest.raises(BadRequest) as excinfo:
        await fetchers(allow_private=True).fetch_all(messages, param_prefix="input")
    assert excinfo.value.param == "input[1].content[2].image_url"
    assert messages[0].images == [] and messages[1].images == ["aW5saW5l"]
    assert messages[1].image_urls == [server.url("/html")]


async def test_fetch_all_runs_at_most_four_fetches_at_once(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    urls = [server.url(f"/gate?n={n}") for n in range(7)]
    messages = [Message("user", image_urls=urls)]
    task = asyncio.create_task(fetchers(allow_private=True).fetch_all(messages))
    try:
        await until(lambda: server.in_flight >= 4)
        await asyncio.sleep(0.05)  # room for a fifth to slip in, were the bound broken
        assert server.most_in_flight == 4
    finally:
        server.release.set()
        await task
    assert len(messages[0].images) == 7 and server.most_in_flight == 4


async def test_with_fetching_off_an_image_url_is_a_400_naming_the_field(
    server: ImageServer, fetchers: Callable[..., ImageFetcher]
) -> None:
    fetcher = fetchers(fetch_urls=False, allow_private=True)
    assert "images.fetch_urls is off" in await refused(fetcher, server.url("/png"))
    messages = [Message("user"), Message("user", image_urls=[server.url("/png")])]
    with pytest.raises(BadRequest) as excinfo:
        await fetcher.fetch_all(messages)
    assert excinfo.value.param == "messages[1].content[0].image_url"
    assert server.hits == []
    await fetcher.fetch_all([Message("user", "no images")])  # nothing to refuse


async def test_the_session_is_made_lazily_and_closing_twice_is_fine(
    server: ImageServer,
) -> None:
    fetcher = ImageFetcher(ImagesConfig(allow_private=True))
    await fetcher.close()
    assert await fetcher.fetch(server.url("/png"), param=P)
    await fetcher.close()
    await fetcher.close()


# --- pure parts: the classifier, the sniffer, the settings -----------------------------


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::200e"],
)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "non-global"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:0.0.0.0", "unspecified"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 around 169.254.169.254
        ("not an address", "unparseable"),
    ],
)
def test_non_public_addresses_are_named(address: str, kind: str) -> None:
    assert address_problem(address) == kind


@pytest.mark.parametrize("kind", ["png", "jpeg", "gif", "webp"])
def test_image_kinds_are_sniffed_from_their_first_bytes(kind: str) -> None:
    assert image_kind(MAGIC[kind]) == kind


def test_text_and_near_misses_are_not_images() -> None:
    assert image_kind(MAGIC["text"]) is None
    assert image_kind(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert image_kind(b"") is None


def test_image_settings_defaults() -> None:
    c = ImagesConfig()
    assert (c.fetch_urls, c.max_bytes, c.timeout_s, c.max_redirects) == (True, 20 << 20, 10, 3)
    assert (c.allow_private, c.allowed_hosts) == (False, [])


def test_allowed_hosts_are_normalised() -> None:
    hosts = ["Images.Example.COM.", " *.cdn.example.net ", "[::FFFF:127.0.0.1]", "10.0.0.5"]
    assert ImagesConfig(allowed_hosts=hosts).allowed_hosts == [
        "images.example.com",
        "*.cdn.example.net",
        "::ffff:7f00:1",
        "10.0.0.5",
    ]


@pytest.mark.parametrize(
    "host", ["https://images.example.com", "images.example.com:443", "a/b", "*", "", "u@h"]
)
def test_allowed_hosts_must_be_bare_hosts(host: str) -> None:
    with pytest.raises(ValidationError, match="is not a host name or IP address"):
        ImagesConfig(allowed_hosts=[host])
