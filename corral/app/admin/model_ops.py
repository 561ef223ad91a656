"""What the admin API's model routes do to the fleet: delete, copy, warm and unload.

Each action goes to the backends named in the request, or to sensible defaults (the
backends holding the model; for warm, the ones the scheduler would route to), and
answers one `BackendResult` per backend concerned. A backend that cannot do it (an
OpenAI-kind server, which serves the one model it was started with and keeps it
loaded while it runs) is reported as such, never as a failure of the whole call.
Every backend acted on is probed again before the answer, so the fleet's model
lists and its view of what is loaded are current when the caller reads them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from corral.adapters.fleet import Fleet
from corral.app.admin.model_schema import ActionResult, BackendResult
from corral.app.backend_calls import BackendReply, call_backend
from corral.core.errors import NotFound, Unavailable
from corral.core.types import BackendState, RequestInfo

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = [
    "OPENAI_KIND",
    "copy_model",
    "delete_model",
    "display_name",
    "held_model",
    "named_backends",
    "outcome",
    "rfc3339",
    "unload_model",
    "upstream_for",
    "wall_clock",
    "warm_model",
]

OPENAI_KIND = "an OpenAI-kind server (vLLM, llama.cpp) serves the model it was started with"
_ALWAYS_LOADED = "an OpenAI-kind server keeps its model loaded for as long as it runs"


# -- names, targets and time ------------------------------------------------------


def display_name(fleet: Fleet, key: str) -> str:
    """The name clients use for a model key: a logical model's configured name, else
    what its backends call it (``Qwen/Qwen2.5-7B-Instruct``, not the key's
    ``Qwen/Qwen2.5-7B-Instruct:latest``), as the fleet's model lists show it."""
    logical = fleet.models.model(key)
    if logical is not None:
        return logical.name
    for b in fleet.scheduler.holders(key):
        return fleet.upstream_name(b.name, key)
    return key


async def held_model(gw: Gateway, requested: str, param: str = "model") -> str:
    """The model key ``requested`` means, if some backend holds it (`NotFound` if none).

    A miss re-reads every backend's model list once first: the model may have been
    pulled behind the gateway's back since the last probe.
    """
    fleet = gw.fleet
    key = fleet.models.resolve(requested)
    if not fleet.scheduler.holders(key):
        await fleet.refresh_models(min_interval=0.0)
    if not fleet.scheduler.holders(key):
        raise NotFound(f"model {requested!r} is not on any backend", param=param)
    return key


def named_backends(fleet: Fleet, names: Sequence[str] | None) -> list[BackendState] | None:
    """The backends a request names (by name or URL), once each; None when it names none."""
    if names is None:
        return None
    found: list[BackendState] = []
    for i, name in enumerate(names):
        state = fleet.find(name)
        if state is None:
            raise NotFound(f"no backend named {name!r}", param=f"backends[{i}]")
        if state not in found:
            found.append(state)
    return found


def upstream_for(fleet: Fleet, b: BackendState, key: str, requested: str) -> str:
    """What to call the model when speaking to ``b``: its own name for it if it holds
    it, else the one the settings give for that backend, else the name as requested."""
    if key in b.models:
        return fleet.upstream_name(b.name, key)
    logical = fleet.models.model(key)
    if logical is not None and b.name in logical.upstreams:
        return logical.upstreams[b.name]
    return requested


def wall_clock() -> Callable[[float], float | None]:
    """Turns the event loop's times (the fleet's expiries) into wall-clock seconds."""
    loop_now = asyncio.get_running_loop().time()
    wall_now = datetime.now(UTC).timestamp()
    return lambda t: None if math.isinf(t) else wall_now + (t - loop_now)


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def outcome(model: str, results: list[BackendResult], message: str | None = None) -> ActionResult:
    """Sum up the per-backend results of one action."""
    results.sort(key=lambda r: r.backend)
    tried = [r for r in results if r.status != "skipped"]
    ok = sum(1 for r in tried if r.status == "ok")
    status: Literal["success", "partial", "error", "skipped"]
    if not tried:
        status = "skipped"
    elif ok == len(tried):
        status = "success"
    else:
        status = "partial" if ok else "error"
    return ActionResult(model=model, status=status, results=results, message=message)


def _skipped(b: BackendState, reason: str, **extra: Any) -> BackendResult:
    return BackendResult(backend=b.name, kind=b.kind, status="skipped", reason=reason, **extra)


def _answered(b: BackendState, reply: BackendReply, **extra: Any) -> BackendResult:
    if reply.error is not None:
        return BackendResult(backend=b.name, kind=b.kind, status="error", error=reply.error)
    return BackendResult(backend=b.name, kind=b.kind, status="ok", **extra)


def _timeout(gw: Gateway) -> float:
    # Quick operations (delete, copy, unload): as long as a loaded model's first byte.
    return gw.settings.timeouts.first_byte_loaded_s


async def _each(
    gw: Gateway,
    targets: Iterable[BackendState],
    send: Callable[[BackendState], Awaitable[BackendReply]],
) -> list[tuple[BackendState, BackendReply]]:
    """``send`` to every target at once, then re-read their model lists."""
    chosen = list(targets)
    replies = await asyncio.gather(*(send(b) for b in chosen))
    await gw.fleet.probe_all(b.name for b in chosen)
    return list(zip(chosen, replies, strict=True))


def _ollama_targets(
    targets: list[BackendState], named: bool, results: list[BackendResult], what: str
) -> list[BackendState]:
    """The Ollama backends to act on; OpenAI-kind ones (and, unless named, down ones)
    are reported as skipped."""
    act = []
    for b in targets:
        if b.kind != "ollama":
            results.append(_skipped(b, f"{OPENAI_KIND}: it cannot {what}"))
        elif not named and not b.healthy:
            results.append(_skipped(b, f"down: {b.last_error or 'not answering'}"))
        else:
            act.append(b)
    return act


# -- delete and copy ----------------------------------------------------------------


async def delete_model(
    gw: Gateway, key: str, requested: str, named: list[BackendState] | None
) -> ActionResult:
    """Delete from the named backends, or from every backend holding the model."""
    fleet = gw.fleet
    results: list[BackendResult] = []
    targets = named if named is not None else list(fleet.scheduler.holders(key))
    act = _ollama_targets(targets, named is not None, results, "delete models")

    async def send(b: BackendState) -> BackendReply:
        body = msgspec.json.encode({"model": upstream_for(fleet, b, key, requested)})
        return await call_backend(fleet, b, "DELETE", "/api/delete", body, timeout=_timeout(gw))

    results += [_answered(b, r) for b, r in await _each(gw, act, send)]
    return outcome(display_name(fleet, key), results)


async def copy_model(
    gw: Gateway, key: str, requested: str, destination: str, named: list[BackendState] | None
) -> ActionResult:
    """Copy on the named backends, or on every backend holding the source."""
    fleet = gw.fleet
    results: list[BackendResult] = []
    targets = named if named is not None else list(fleet.scheduler.holders(key))
    act = _ollama_targets(targets, named is not None, results, "copy models")

    async def send(b: BackendState) -> BackendReply:
        source = upstream_for(fleet, b, key, requested)
        body = msgspec.json.encode({"source": source, "destination": destination})
        return await call_backend(fleet, b, "POST", "/api/copy", body, timeout=_timeout(gw))

    results += [_answered(b, r) for b, r in await _each(gw, act, send)]
    return outcome(display_name(fleet, key), results)


# -- warm and unload ------------------------------------------------------------------


def pick_backends(
    fleet: Fleet, key: str, candidates: list[BackendState], n: int
) -> list[tuple[BackendState, str]]:
    """Up to ``n`` of ``candidates``, in the order the model's routing policy prefers.

    The policy is asked as for a request, without taking a slot, among the candidates
    with a free slot only (so it never notes a request waiting for a busy one); when
    none has one, or it would rather wait, the least busy candidate goes next.
    """
    policy = fleet.scheduler.policy(key)
    info = RequestInfo(model=key, endpoint="/admin/models/warm")
    now = asyncio.get_running_loop().time()
    pool = list(candidates)
    chosen: list[tuple[BackendState, str]] = []
    while pool and len(chosen) < n:
        free = [b for b in pool if b.has_slot(key)]
        choice = policy.select(free, info, now) if free else None
        if choice is None:
            b = min(pool, key=lambda s: (s.in_flight / max(1, s.max_concurrency), s.name))
            choice = (b, "least busy holder")
        chosen.append(choice)
        pool.remove(choice[0])
    return chosen


async def _load(
    gw: Gateway, b: BackendState, model: str, keep_alive: Any, timeout: float
) -> BackendReply:
    """Ollama loads a model on a request without a prompt; keep_alive 0 unloads it."""
    fields: dict[str, Any] = {"model": model}
    if keep_alive is not None:
        fields["keep_alive"] = keep_alive
    body = msgspec.json.encode({**fields, "stream": False})
    reply = await call_backend(gw.fleet, b, "POST", "/api/generate", body, timeout=timeout)
    if reply.status == 400 and "does not support" in (reply.error or ""):
        # An embedding model: Ollama loads it through /api/embed, without input.
        body = msgspec.json.encode(fields)
        reply = await call_backend(gw.fleet, b, "POST", "/api/embed", body, timeout=timeout)
    return reply


def _residency(gw: Gateway, b: BackendState, key: str) -> dict[str, Any]:
    """Whether ``key`` is resident on ``b`` now, and until when (for a result)."""
    now = asyncio.get_running_loop().time()
    if not b.is_loaded(key, now):
        return {"loaded": False}
    return {"loaded": True, "expires_at": rfc3339(wall_clock()(b.loaded[key]))}


def _openai_holds(b: BackendState, key: str) -> BackendResult:
    if key in b.models:
        return BackendResult(
            backend=b.name, kind=b.kind, status="ok", reason=_ALWAYS_LOADED, loaded=True
        )
    error = f"{OPENAI_KIND}, and it serves another: {', '.join(sorted(b.models)) or 'none'}"
    return BackendResult(backend=b.name, kind=b.kind, status="error", error=error)


async def warm_model(
    gw: Gateway,
    key: str,
    requested: str,
    named: list[BackendState] | None,
    copies: int | None,
    keep_alive: Any,
) -> ActionResult:
    """Load the model on the named backends, or on ``copies`` (default 1) of its holders
    in the order the scheduler would route to them."""
    fleet = gw.fleet
    results: list[BackendResult] = []
    message = None
    chosen: list[tuple[BackendState, str]] = []
    if named is not None:
        for b in named:
            if b.kind == "ollama":
                chosen.append((b, "named in the request"))
            else:
                results.append(_openai_holds(b, key))
    else:
        holders = fleet.scheduler.holders(key)
        results += [_openai_holds(b, key) for b in holders if b.kind != "ollama" and b.healthy]
        usable = [
            b for b in holders if b.kind == "ollama" and b.candidate and _allowed(fleet, b, key)
        ]
        want = copies or 1
        chosen = pick_backends(fleet, key, usable, want)
        if not chosen and not results:
            raise Unavailable(
                f"no backend holding {requested!r} can take it now (down, disabled, "
                "draining or cooling down)",
                retry_after=5,
            )
        if len(chosen) < want:
            message = f"asked for {want} copies; {len(chosen)} Ollama backends can load it now"
    reasons = {b.name: why for b, why in chosen}
    timeout = gw.settings.timeouts.first_byte_s  # a cold load may take minutes

    async def send(b: BackendState) -> BackendReply:
        return await _load(gw, b, upstream_for(fleet, b, key, requested), keep_alive, timeout)

    for b, reply in await _each(gw, (b for b, _ in chosen), send):
        extra = _residency(gw, b, key) if reply.error is None else {}
        results.append(_answered(b, reply, reason=reasons[b.name], **extra))
    return outcome(display_name(fleet, key), results, message)


def _allowed(fleet: Fleet, b: BackendState, key: str) -> bool:
    breakers = fleet.breakers
    return breakers is None or breakers.allows(b.name, key, asyncio.get_running_loop().time())


async def unload_model(
    gw: Gateway, key: str, requested: str, named: list[BackendState] | None
) -> ActionResult:
    """Unload the model from the named backends, or from every backend it is loaded on."""
    fleet = gw.fleet
    results: list[BackendResult] = []
    targets = named if named is not None else list(fleet.scheduler.holders(key))
    ollama = []
    for b in targets:
        if b.kind == "ollama":
            ollama.append(b)
        elif key in b.models:
            reason = f"{_ALWAYS_LOADED}: remove the backend (or stop it) to free its memory"
            results.append(_skipped(b, reason, loaded=True))
        else:
            results.append(_skipped(b, f"{OPENAI_KIND}, and it serves another", loaded=False))
    await fleet.probe_all(b.name for b in ollama)  # what is loaded where, now
    now = asyncio.get_running_loop().time()
    act = []
    for b in ollama:
        if b.is_loaded(key, now):
            act.append(b)
        elif named is not None:
            results.append(_skipped(b, "not loaded there", loaded=False))
    timeout = _timeout(gw)

    async def send(b: BackendState) -> BackendReply:
        return await _load(gw, b, upstream_for(fleet, b, key, requested), 0, timeout)

    for b, reply in await _each(gw, act, send):
        extra = _residency(gw, b, key) if reply.error is None else {}
        if extra.get("loaded"):
            extra["reason"] = "still resident: it unloads when its running requests end"
        results.append(_answered(b, reply, **extra))
    message = None if act or named is not None else "not loaded on any Ollama backend"
    return outcome(display_name(fleet, key), results, message)
