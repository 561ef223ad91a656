"""uvicorn's server with Corral's own accept loop: every pending connection at once.

libuv (under uvloop) accepts one connection per event-loop iteration since libuv 1.45
("unix: don't accept() connections in a loop", libuv PR #3696). With 1,000 streams open
an iteration of Corral's loop takes 10-50 ms, so a burst of new clients waited in the
kernel's accept queue for seconds: the 1,000-stream benchmark saw the queue hold ~130
connections for about a second and a time-to-first-chunk p99 of 1-5 s, all of it before
the request reached Corral (inside Corral the first chunk took at most ~160 ms).

Here the listening sockets are Corral's: a reader callback accepts until the queue is
empty (at most ``backlog`` a wake-up) and hands each socket to the loop's
``connect_accepted_socket`` with uvicorn's protocol, so connections are served by
uvicorn exactly as before. uvicorn itself gets an empty socket list: it runs lifespan,
signals and graceful shutdown, and listens on nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import Any

import uvicorn

from corral.app.collector import CollectorPacer

__all__ = ["Server", "bind"]

log = logging.getLogger("corral.listener")

_PAUSE_ON_EMFILE_S = 0.5  # out of descriptors: try again later instead of spinning


def bind(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (like asyncio's
    create_server: SO_REUSEADDR, IPv6 sockets IPv6-only)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            if port == 0:  # every address on the one port the first got
                port = sock.getsockname()[1]
    except OSError:
        for sock in socks:
            sock.close()
        raise
    for sock in socks:
        sock.listen(backlog)
    return socks


class Server(uvicorn.Server):
    """A uvicorn server whose connections are accepted by :class:`_Acceptor`s."""

    def __init__(self, config: uvicorn.Config, *, pace_collector: bool = False) -> None:
        super().__init__(config)
        self._acceptors: list[_Acceptor] = []
        # `corral serve` runs the cyclic collector on a clock (corral/app/collector.py);
        # tests that serve an app in their own process leave theirs alone.
        self._pace_collector = pace_collector
        self._pacer: CollectorPacer | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if sockets is None:
            try:
                sockets = bind(config.host, config.port, config.backlog)
            except OSError as exc:
                log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
                raise SystemExit(3) from None
        else:
            for sock in sockets:  # bound, maybe not listening yet (as create_server takes them)
                sock.listen(config.backlog)
        await super().startup(sockets=[])  # lifespan; uvicorn listens on nothing
        if self.should_exit or not self.started:
            return
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )

        self._acceptors = [_Acceptor(loop, s, protocol, config.backlog) for s in sockets]
        if self._pace_collector:
            tasks = self.server_state.tasks  # one per request being answered
            self._pacer = CollectorPacer(loop, lambda: len(tasks))
            self._pacer.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors = []
        if self._pacer is not None:
            self._pacer.stop()
            self._pacer = None
        await super().shutdown(sockets=sockets)


class _Acceptor:
    """Accepts everything pending on one listening socket whenever it is readable."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: Any,
        backlog: int,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.protocol = protocol
        self.backlog = max(1, backlog)
        self.tasks: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)
        self.reading = True

    def _accept(self) -> None:
        for _ in range(self.backlog):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed (%s); pausing %.1f s", exc, _PAUSE_ON_EMFILE_S)
                    self._pause()
                    return
                raise
            conn.setblocking(False)
            task = self.loop.create_task(self._serve(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.protocol, conn)
        except OSError as exc:
            log.debug("dropped a connection being accepted: %s", exc)
            conn.close()

    def _pause(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.reading = False
        self.loop.call_later(_PAUSE_ON_EMFILE_S, self._resume)

    def _resume(self) -> None:
        if self.sock.fileno() >= 0 and not self.reading:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.reading = True

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            if self.reading:
                self.loop.remove_reader(self.sock.fileno())
                self.reading = False
            with contextlib.suppress(OSError):
                self.sock.close()
