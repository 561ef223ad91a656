"""The worker pool: each spawned worker from its reservation to its end.

A worker is started by the provider (a local process for now), waits until its
engine answers and holds the required models, and only then joins the fleet as a
backend of origin ``worker`` (`Gateway.add_and_probe`). A retired worker is drained
first (it finishes what it has and takes nothing new), then leaves the fleet
(`Gateway.remove_backend`) and is stopped. A worker that exits on its own is noticed
at once (a task waits on every process), taken out of the fleet, and replaced by the
next look of the autoscaler (corral/app/workers/scaling.py) when the pool is below
``workers.min``. Nothing here is on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.adapters.workers import (
    Launch,
    ProcessProvider,
    WorkerHandle,
    WorkerProvider,
    WorkerStartError,
    pick_port,
    wait_ready,
)
from corral.app.workers.scaling import ScaleEvent, Scaling
from corral.config.models import BackendConfig
from corral.config.workers import WorkersConfig
from corral.core.autoscale import Autoscaler, PruneMode, next_gpu, prune_order
from corral.core.errors import Conflict, NotFound, UpstreamError
from corral.core.names import url_host

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["Worker", "WorkerPool"]

log = logging.getLogger("corral.workers")

LIVE = ("starting", "ready")
_LOG_KEPT = 50  # lines of an ended worker's output kept for the admin API


@dataclass(eq=False)
class Worker:
    """One spawned worker, from reservation to its end."""

    id: str
    launch: Launch
    url: str
    reason: str  # why it was started: "admin", "autoscale", "min" or "demand"
    created_at: float  # wall clock
    started_at: float  # the loop's clock
    state: str = "starting"  # starting, ready, draining, stopping, stopped, failed
    handle: WorkerHandle | None = None
    ready_at: float | None = None  # wall clock
    ended_at: float | None = None  # wall clock
    idle_since: float | None = None  # the loop's clock; None while busy
    done_seen: int = 0
    served: int = 0  # requests answered, as last seen in the fleet
    error: str | None = None
    exit_code: int | None = None
    models: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # kept once it ended
    bring_up: asyncio.Task[None] | None = None
    watcher: asyncio.Task[int | None] | None = None
    retiring: asyncio.Task[Any] | None = None  # whatever is ending it (a stop, a crash)


class WorkerPool:
    def __init__(
        self, gw: Gateway, config: WorkersConfig, provider: WorkerProvider | None = None
    ) -> None:
        self.gw = gw
        self.config = config
        self.provider: WorkerProvider = provider or ProcessProvider(config.command, config.env)
        self.workers: dict[str, Worker] = {}  # not ended yet
        self.ended: deque[Worker] = deque(maxlen=20)  # newest first
        self.scaling = Scaling(self)
        self._seq = 0
        self._gpu_turn = 0
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False

    # -- views ----------------------------------------------------------------

    @property
    def autoscaler(self) -> Autoscaler:
        return self.scaling.autoscaler

    @property
    def events(self) -> deque[ScaleEvent]:
        """The autoscaler's actions, newest first."""
        return self.scaling.events

    @property
    def closing(self) -> bool:
        """The gateway is stopping: nothing new starts."""
        return self._closing

    def live(self) -> list[Worker]:
        """Workers starting or serving (what min and max count)."""
        return [w for w in self.workers.values() if w.state in LIVE]

    def find(self, worker_id: str) -> Worker | None:
        found = self.workers.get(worker_id)
        return found or next((w for w in self.ended if w.id == worker_id), None)

    def log_tail(self, worker: Worker, lines: int) -> list[str]:
        if worker.handle is not None and worker.ended_at is None:
            return self.provider.log_tail(worker.handle, lines)
        return worker.log[-lines:] if lines > 0 else []

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        self._wake.set()  # the first look starts the min workers
        self._loop_task = asyncio.create_task(self._run(), name="corral-workers")

    async def stop(self) -> None:
        """Stop every worker (the gateway is stopping: no draining, nothing left over)."""
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        # Drains under way give up at once (see _drained); the rest stop without one.
        stopping = [self.retiring(w, drain=False) for w in list(self.workers.values())]
        await asyncio.gather(*stopping, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self.replace_unhealthy()
                await self.scaling.check()
            except Exception:  # the supervisor must outlive one bad look
                log.exception("workers: the autoscaler's check failed")

    def replace_unhealthy(self) -> list[Worker]:
        """Stop the ready workers whose health checks have failed for ``unhealthy_s``: a
        process that runs but no longer answers. Each is counted as failed (a crash
        would be), and the next look starts another if the pool is below min."""
        limit = self.config.unhealthy_s
        if limit <= 0:
            return []
        now = asyncio.get_running_loop().time()
        hung = []
        for w in self.workers.values():
            state = self.gw.fleet.backends.get(w.id)
            if w.state != "ready" or w.retiring is not None or state is None or state.healthy:
                continue
            if state.offline or state.last_ok_at is None or now - state.last_ok_at < limit:
                continue
            why = f"unhealthy for {now - state.last_ok_at:.0f}s ({state.last_error or 'no answer'})"
            w.state = "stopping"  # from now on it is neither live nor a candidate to prune
            stop = self._fail(w, why, "stopped answering")
            w.retiring = asyncio.create_task(stop, name=f"stop-{w.id}")
            hung.append(w)
        return hung

    # -- spawning ---------------------------------------------------------------

    async def spawn(self, count: int, *, reason: str = "admin", wait: bool = True) -> list[Worker]:
        """Start ``count`` workers; with ``wait``, return once all are ready.

        Past ``workers.max`` it is a `Conflict` and nothing starts. With ``wait``, if
        any of them fails, the others are stopped too and `UpstreamError` says why.
        """
        live = len(self.live())
        if live + count > self.config.max:
            raise Conflict(
                f"spawning {count} would make {live + count} workers; workers.max is "
                f"{self.config.max} ({live} running or starting)",
                param="count",
            )
        try:
            workers = self.reserve(count, reason)
        except WorkerStartError as exc:
            raise Conflict(str(exc), param="count") from None
        if not wait:
            return workers
        # asyncio.wait, not gather: the caller leaving must not cancel the starts.
        await asyncio.wait([w.bring_up for w in workers if w.bring_up is not None])
        failed = [w for w in workers if w.state != "ready"]
        if failed:
            await asyncio.gather(*(self.retiring(w) for w in workers))
            why = "; ".join(f"{w.id}: {w.error or w.state}" for w in failed)
            tail = " | ".join(failed[0].log[-5:])
            raise UpstreamError(
                f"{len(failed)} of {count} workers did not become ready ({why}); none were "
                f"kept" + (f"; last output of {failed[0].id}: {tail}" if tail else "")
            )
        return workers

    def reserve(self, count: int, reason: str) -> list[Worker]:
        """Pick ids, ports and GPUs for ``count`` workers and start bringing them up."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        taken = {w.launch.port for w in self.workers.values()}
        gpus = Counter(w.launch.gpu for w in self.workers.values() if w.launch.gpu)
        made: list[Worker] = []
        turn = self._gpu_turn
        for _ in range(count):
            port = pick_port(cfg.host, cfg.port_range, taken)
            taken.add(port)
            gpu = None
            if cfg.gpus:
                gpu, turn = next_gpu(cfg.gpus, gpus, turn)
                gpus[gpu] += 1
            worker_id = self._next_id({w.id for w in made})
            made.append(
                Worker(
                    id=worker_id,
                    launch=Launch(worker_id, cfg.host, port, gpu),
                    url=f"http://{url_host(cfg.host)}:{port}",
                    reason=reason,
                    created_at=time.time(),
                    started_at=loop.time(),
                )
            )
        self._gpu_turn = turn
        for w in made:
            self.workers[w.id] = w
            w.bring_up = asyncio.create_task(self._bring_up(w), name=f"start-{w.id}")
        return made

    def _next_id(self, also_taken: set[str]) -> str:
        while True:
            self._seq += 1
            name = f"worker-{self._seq}"
            if (
                name not in self.gw.fleet.backends
                and name not in self.workers
                and name not in also_taken
            ):
                return name

    async def _bring_up(self, w: Worker) -> None:
        cfg = self.config
        try:
            starting = asyncio.ensure_future(self.provider.start(w.launch))
            try:
                w.handle = await asyncio.shield(starting)
            except asyncio.CancelledError:
                # Retired while its process was being created: keep it, to stop it.
                with contextlib.suppress(Exception):
                    w.handle = await starting
                raise
            w.watcher = asyncio.create_task(self._watch(w), name=f"watch-{w.id}")
            ready = asyncio.create_task(
                wait_ready(w.url, cfg.kind, cfg.models, cfg.ready_timeout_s)
            )
            try:
                await asyncio.wait({ready, w.watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not ready.done():
                    ready.cancel()
                    with contextlib.suppress(asyncio.CancelledError, WorkerStartError):
                        await ready
            if not ready.done() or ready.cancelled() or w.watcher.done():
                raise WorkerStartError(f"exited with code {w.handle.exit_code} while starting")
            w.models = sorted(ready.result())
            # An unset max_concurrency takes the kind's default, as in the settings.
            backend = BackendConfig.model_validate(
                {
                    "name": w.id,
                    "url": w.url,
                    "kind": cfg.kind,
                    "max_concurrency": cfg.max_concurrency,
                }
            )
            await self.gw.add_and_probe(backend, origin="worker")
            if w.watcher.done():  # it died while being probed
                raise WorkerStartError(f"exited with code {w.handle.exit_code} while starting")
        except WorkerStartError as exc:
            await self._fail(w, str(exc))
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("worker %s: unexpected failure while starting", w.id)
            await self._fail(w, f"{type(exc).__name__}: {exc}")
            return
        w.state = "ready"
        w.ready_at = time.time()
        w.idle_since = asyncio.get_running_loop().time()
        self.autoscaler.succeeded()
        took = w.ready_at - w.created_at
        log.info("worker %s ready at %s after %.1fs (%s)", w.id, w.url, took, w.reason)

    async def _watch(self, w: Worker) -> int | None:
        assert w.handle is not None
        code = await self.provider.wait(w.handle)
        w.exit_code = code
        if w.state in ("ready", "draining") and w.retiring is None:
            w.retiring = asyncio.current_task()  # a prune arriving now waits for this
            w.error = f"exited unexpectedly with code {code}"
            log.warning("worker %s %s", w.id, w.error)
            await self._leave_fleet(w)
            self._end(w, "failed")
            self.autoscaler.failed(asyncio.get_running_loop().time())
            self.wake()
        return code

    async def _fail(self, w: Worker, why: str, what: str = "failed to start") -> None:
        w.error = why
        log.warning("worker %s %s: %s", w.id, what, why)
        await self._leave_fleet(w)
        if w.handle is not None:
            w.exit_code = await self.provider.stop(w.handle, self.config.stop_timeout_s)
        self._end(w, "failed")
        self.autoscaler.failed(asyncio.get_running_loop().time())
        self.wake()

    async def _leave_fleet(self, w: Worker) -> None:
        state = self.gw.fleet.backends.get(w.id)
        if state is not None and state.origin == "worker":
            w.served = state.served
            await self.gw.remove_backend(w.id)

    def _end(self, w: Worker, state: str) -> None:
        if w.ended_at is not None:
            return
        if w.handle is not None:
            w.log = self.provider.log_tail(w.handle, _LOG_KEPT)
        w.state = state
        w.ended_at = time.time()
        self.workers.pop(w.id, None)
        self.ended.appendleft(w)

    # -- pruning ----------------------------------------------------------------

    async def prune(
        self, mode: PruneMode, count: int | None = None, *, wait: bool = True
    ) -> list[Worker]:
        """Retire idle workers (or all, idle first), draining busy ones first."""
        now = asyncio.get_running_loop().time()
        self.scaling.note_idle(now)
        order = prune_order(self.scaling.loads(), mode, now)
        chosen = [self.workers[i] for i in (order if count is None else order[:count])]
        await self._retire_all(chosen, wait=wait)
        return chosen

    async def remove(self, worker_id: str, *, wait: bool = True) -> Worker:
        w = self.workers.get(worker_id)
        if w is None:
            ended = self.find(worker_id)
            what = f"already {ended.state}" if ended is not None else "not a worker"
            raise NotFound(f"{worker_id!r} is {what}", param="id")
        await self._retire_all([w], wait=wait)
        return w

    async def _retire_all(self, workers: list[Worker], *, wait: bool) -> None:
        tasks = [self.retiring(w) for w in workers]
        if wait and tasks:
            await asyncio.gather(*(asyncio.shield(t) for t in tasks))

    def retiring(self, w: Worker, drain: bool = True) -> asyncio.Task[Any]:
        if w.retiring is None:
            # At once, not when the task first runs: from now on it takes nothing new
            # and no longer counts as live.
            if w.state == "ready":
                w.state = "draining"
                if w.id in self.gw.fleet.backends:
                    self.gw.fleet.drain(w.id)
            elif w.state == "starting":
                w.state = "stopping"
            w.retiring = asyncio.create_task(self._retire(w, drain=drain), name=f"stop-{w.id}")
        return w.retiring

    async def _retire(self, w: Worker, *, drain: bool) -> None:
        if w.ended_at is not None:
            return
        if w.bring_up is not None and not w.bring_up.done():
            w.state = "stopping"
            w.bring_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w.bring_up
        elif w.state in ("ready", "draining"):
            w.state = "draining"
            backend = self.gw.fleet.backends.get(w.id)
            if backend is not None and not backend.draining:
                self.gw.fleet.drain(w.id)
            if drain:
                await self._drained(w)
        w.state = "stopping"
        await self._leave_fleet(w)
        if w.handle is not None:
            w.exit_code = await self.provider.stop(w.handle, self.config.stop_timeout_s)
        log.info("worker %s stopped (exit %s)", w.id, w.exit_code)
        self._end(w, "stopped")
        if not self._closing:
            self.wake()  # below min now? the next look starts another

    async def _drained(self, w: Worker) -> None:
        """Wait (bounded) until the worker's in-flight requests have finished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout_s
        while (state := self.gw.fleet.backends.get(w.id)) is not None and state.in_flight:
            if self._closing:
                return
            if loop.time() >= deadline:
                log.warning(
                    "worker %s: %d requests still in flight after %gs of draining; stopping",
                    w.id,
                    state.in_flight,
                    self.config.drain_timeout_s,
                )
                return
            await asyncio.sleep(0.05)
