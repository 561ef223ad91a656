"""What both dialects' inference handlers share: the answer's writer and its faults.

A :class:`FaultyStream` writes a streamed answer (NDJSON lines for Ollama, SSE events
for vLLM: a :class:`Framing`), preparing the response on its first write, and plays the
mid-stream fault drawn for its request when it is created: ``drop_mid_stream`` cuts
the connection, ``error_mid_stream`` writes the dialect's error and ends the stream,
``malformed_json`` breaks one item. :meth:`FaultyStream.whole` plays the same faults
on a non-streamed body, and :meth:`FaultyStream.guard` cancels the request in the model
when the client leaves (or a fault cut it) before the model was done with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from corral.sim.model_types import ReqId
from corral.sim.runtime import LoopRuntime

__all__ = ["FaultyStream", "Framing", "Stop", "cut"]


class Stop(Exception):
    """A fault ended the response early."""


@dataclass(frozen=True)
class Framing:
    """How a dialect frames a streamed answer."""

    content_type: str
    end: bytes  # what ends one item (a line, an event)
    error: bytes  # what ``error_mid_stream`` writes before the stream ends


def cut(request: web.Request) -> None:
    """Close the connection abruptly, mid-response."""
    if request.transport is not None:
        request.transport.abort()


class FaultyStream:
    """Writes one answer's items and plays the mid-stream fault drawn for it."""

    def __init__(self, request: web.Request, rt: LoopRuntime[Any], framing: Framing) -> None:
        self.request = request
        self.rt = rt
        self.framing = framing
        self.resp: web.StreamResponse | None = None
        self.count = 0
        # Set once the model is done with the request: leaving then cancels nothing.
        self.finished = False
        f, dice = rt.faults, rt.dice
        self.after = f.after_chunks
        self.fault = (
            "drop_mid_stream"
            if dice.roll(f.drop_mid_stream)
            else "error_mid_stream"
            if dice.roll(f.error_mid_stream)
            else "malformed_json"
            if dice.roll(f.malformed_json)
            else None
        )

    async def put(self, items: list[bytes], final: bool = False) -> None:
        out: list[bytes] = []
        for i, item in enumerate(items):
            last = final and i == len(items) - 1
            if self.fault is not None and (self.count >= self.after or last):
                kind, self.fault = self.fault, None
                self.rt.counters.errors[kind] += 1
                if kind == "malformed_json":
                    item = item[: len(item) // 2] + self.framing.end
                else:
                    if kind == "error_mid_stream":
                        out.append(self.framing.error)
                    await self._write(out)
                    if kind == "error_mid_stream" and self.resp is not None:
                        await self.resp.write_eof()
                    else:
                        cut(self.request)
                    raise Stop(kind)
            out.append(item)
            self.count += 1
        await self._write(out)

    async def finish(self, items: list[bytes]) -> web.StreamResponse:
        """Write the last items and end the stream: the request is complete."""
        self.finished = True
        await self.put(items, final=True)
        assert self.resp is not None
        await self.resp.write_eof()
        self.rt.counters.completed += 1
        return self.resp

    async def _write(self, out: list[bytes]) -> None:
        if self.resp is None:
            self.resp = web.StreamResponse(headers={"Content-Type": self.framing.content_type})
            await self.resp.prepare(self.request)
        if out:
            await self.resp.write(b"".join(out))

    def whole(self, body: bytes) -> bytes | None:
        """Play the drawn fault on a non-streamed body: the body to send (half of it
        when malformed), or None for ``error_mid_stream`` (the caller answers its
        dialect's 500); a dropped connection raises :class:`Stop`."""
        kind = self.fault
        if kind is None:
            return body
        self.rt.counters.errors[kind] += 1
        if kind == "malformed_json":
            return body[: len(body) // 2]
        if kind == "error_mid_stream":
            return None
        cut(self.request)
        raise Stop(kind)

    async def guard(
        self, req_id: ReqId, answer: Awaitable[web.StreamResponse]
    ) -> web.StreamResponse:
        """Await ``answer``; a client that leaves before the model is done with the
        request, or a fault that ends the answer, cancels it in the model."""
        try:
            return await answer
        except ConnectionError:
            # The client left while we wrote: same as a disconnect.
            raise asyncio.CancelledError() from None
        except Stop:
            # The fault ended it; the model must not keep generating for a gone client.
            self.finished = True
            self.rt.cancel(req_id)
            if self.resp is not None:
                return self.resp
            raise asyncio.CancelledError() from None
        finally:
            if not self.finished:
                self.rt.cancel(req_id)
                self.rt.counters.cancelled += 1
