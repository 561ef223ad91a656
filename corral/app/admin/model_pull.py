"""``POST /admin/models/pull``: one pull on many backends, streamed as NDJSON.

Each backend's Ollama progress stream is followed by `read_progress` (shared with the
Ollama API's own fleet-wide pull) and `PullTally` turns the lines into one stream a
client can draw as a progress bar per backend:

- ``start``: the model and every backend concerned (one bar each);
- ``progress``: one backend's status and its bytes completed/total over every layer
  it has announced so far;
- ``overall``: the bytes summed over every backend, and how many have finished;
- ``done``: one backend finished — ``result`` ok, error (with ``error``) or skipped
  (with ``reason``: an OpenAI-kind server cannot pull);
- ``summary``: the last line, with the action's status and every backend's result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.responses import Response

from corral.app.admin.model_ops import OPENAI_KIND, display_name, outcome, upstream_for
from corral.app.admin.model_schema import BackendResult
from corral.app.asgi import Receive, Scope, Send, watch_disconnect
from corral.app.backend_calls import ProgressQueue, read_progress
from corral.core.errors import Unavailable
from corral.core.types import BackendState

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["Emit", "ProgressStream", "PullTally", "plan_pull", "run_pull"]

Emit = Callable[[dict[str, Any]], Awaitable[None]]


class PullTally:
    """The lines of a fleet-wide pull, from each backend's Ollama progress lines."""

    def __init__(
        self, model: str, pulling: list[BackendState], skipped: list[tuple[BackendState, str]]
    ) -> None:
        self.model = model
        self._kinds = {b.name: b.kind for b in pulling} | {b.name: b.kind for b, _ in skipped}
        self._order = [b.name for b in pulling]
        self._skipped = [(b.name, why) for b, why in skipped]
        self._layers: dict[str, dict[str, tuple[int, int]]] = {n: {} for n in self._order}
        self._succeeded: set[str] = set()
        self._results: dict[str, BackendResult] = {}

    @property
    def finished(self) -> bool:
        return all(name in self._results for name in self._order)

    def start(self) -> list[dict[str, Any]]:
        """The first lines: every backend concerned, then those skipped, each done."""
        names = [*self._order, *(n for n, _ in self._skipped)]
        lines: list[dict[str, Any]] = [{"type": "start", "model": self.model, "backends": names}]
        for name, why in self._skipped:
            self._results[name] = self._result(name, "skipped", reason=why)
            lines.append({"type": "done", "backend": name, "result": "skipped", "reason": why})
        return lines

    def _bytes(self, name: str) -> tuple[int, int]:
        layers = self._layers.get(name, {}).values()
        return sum(c for _, c in layers), sum(t for t, _ in layers)

    def _overall(self) -> dict[str, Any]:
        done = total = 0
        for name in self._order:
            c, t = self._bytes(name)
            done += c
            total += t
        finished = sum(1 for n in self._order if n in self._results)
        return {
            "type": "overall",
            "completed": done,
            "total": total,
            "finished": finished,
            "backends": len(self._order),
        }

    def line(self, name: str, line: dict[str, Any]) -> list[dict[str, Any]]:
        """A progress line from backend ``name``: its own line, and the overall one when
        bytes moved."""
        status = str(line.get("status", ""))
        if status == "success":
            self._succeeded.add(name)
            return []  # its "done" line says so
        digest = line.get("digest")
        moved = False
        if isinstance(digest, str) and "total" in line:
            layer = (int(line.get("total") or 0), int(line.get("completed") or 0))
            moved = self._layers[name].get(digest) != layer
            self._layers[name][digest] = layer
        completed, total = self._bytes(name)
        out: dict[str, Any] = {
            "type": "progress",
            "backend": name,
            "status": status,
            "completed": completed,
            "total": total,
        }
        if isinstance(digest, str):
            out["digest"] = digest
        return [out, self._overall()] if moved else [out]

    def end(self, name: str, error: str | None) -> list[dict[str, Any]]:
        """Backend ``name`` finished (with ``error``, if it failed)."""
        if error is None and name not in self._succeeded:
            error = "ended without success"
        if error is None:
            self._results[name] = self._result(name, "ok")
            done: dict[str, Any] = {"type": "done", "backend": name, "result": "ok"}
        else:
            self._results[name] = self._result(name, "error", error=error)
            done = {"type": "done", "backend": name, "result": "error", "error": error}
        return [done, self._overall()]

    def _result(self, name: str, status: str, **extra: str) -> BackendResult:
        return BackendResult.model_validate(
            {"backend": name, "kind": self._kinds[name], "status": status, **extra}
        )

    def cancelled(self) -> None:
        """The pull was abandoned: the backends still pulling count as failed."""
        for name in self._order:
            self._results.setdefault(name, self._result(name, "error", error="cancelled"))

    def summary(self) -> dict[str, Any]:
        whole = outcome(self.model, list(self._results.values()))
        return {"type": "summary", **whole.model_dump(exclude_none=True)}


def plan_pull(
    gw: Gateway, requested: str, named: list[BackendState] | None, *, insecure: bool = False
) -> tuple[PullTally, list[tuple[BackendState, dict[str, Any]]]]:
    """Who pulls what: the named backends, or every healthy Ollama backend (healthy
    OpenAI-kind ones are listed as skipped); each asked in its own name for the model."""
    fleet = gw.fleet
    key = fleet.models.resolve(requested)
    targets = named if named is not None else [*fleet.routable("ollama"), *fleet.routable("openai")]
    if not targets:
        raise Unavailable("no healthy backend to pull on", retry_after=5)
    pulling = [b for b in targets if b.kind == "ollama"]
    skipped = [(b, f"{OPENAI_KIND}: it cannot pull") for b in targets if b.kind != "ollama"]
    pulls = []
    for b in pulling:
        body: dict[str, Any] = {"model": upstream_for(fleet, b, key, requested)}
        if insecure:
            body["insecure"] = True
        pulls.append((b, body))
    return PullTally(display_name(fleet, key), pulling, skipped), pulls


async def run_pull(
    gw: Gateway,
    tally: PullTally,
    pulls: list[tuple[BackendState, dict[str, Any]]],
    emit: Emit,
) -> dict[str, Any]:
    """Pull on every backend at once, emitting the tally's lines; returns the summary.

    If the caller goes away (``emit`` or the wait is cancelled), the pulls still
    running are cancelled with it, as Ollama cancels a pull whose client left.
    """
    queue: ProgressQueue = asyncio.Queue()
    idle = gw.settings.timeouts.stream_idle_s
    tasks = [
        asyncio.create_task(read_progress(gw.fleet, b, "/api/pull", body, queue, idle_timeout=idle))
        for b, body in pulls
    ]
    try:
        for line in tally.start():
            await emit(line)
        while not tally.finished:
            name, progress, error = await queue.get()
            lines = tally.line(name, progress) if progress is not None else tally.end(name, error)
            for line in lines:
                await emit(line)
    except asyncio.CancelledError:
        tally.cancelled()
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return tally.summary()


class ProgressStream(Response):
    """An NDJSON stream written by ``produce(emit)``, cancelled if the client leaves.

    Starlette's StreamingResponse would notice a departure only at its next write;
    a pull can stay silent for a long time, so the client is watched instead.
    """

    media_type = "application/x-ndjson"

    def __init__(self, produce: Callable[[Emit], Awaitable[object]]) -> None:
        # No body and so no content-length, as StreamingResponse sets itself up.
        self.status_code = 200
        self.background = None
        self._produce = produce
        self.init_headers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        def on_gone() -> None:
            nonlocal gone
            gone = True
            task.cancel()

        async def emit(line: dict[str, Any]) -> None:
            body = msgspec.json.encode(line) + b"\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})

        # Headers first: a client drawing progress bars sees the stream open at once.
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.create_task(watch_disconnect(receive, on_gone))
        try:
            await self._produce(emit)
            watcher.cancel()
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
        finally:
            watcher.cancel()
