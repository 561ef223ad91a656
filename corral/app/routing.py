"""What the scheduler learns about a request before it is routed.

Tenant, priority and session: with API keys the tenant is the key's user (weighted
by their group's weight in the store, else ``tenants.weights[group]``), and
``X-Corral-Tenant`` is ignored; without them, ``X-Corral-Tenant``, else the client's
address. ``X-Corral-Priority`` may only lower the default class; ``X-Corral-Session``
pins a conversation to a backend; ``X-Corral-Max-Wait`` shortens how long the request
may queue. The prompt
gives two more facts: a token estimate (about 4 characters a token, good enough to
charge a fair share up front; the real counts settle it at the end) and the chained
hashes of its leading blocks, so requests sharing a long prefix can prefer the backend
whose prefix cache already holds it.
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.adapters import ollama
from corral.app.pipeline import RequestContext
from corral.core import canonical
from corral.core.types import RequestInfo

__all__ = ["PREFIX_BLOCK_CHARS", "prefix_hashes", "request_info"]

# 256 characters is about 64 tokens: fine enough to tell prompts apart, coarse enough
# that hashing a long prompt costs microseconds. Only the first 256 blocks count.
PREFIX_BLOCK_CHARS = 256
_MAX_BLOCKS = 256
_DEFAULT_PRIORITY = 0


def prefix_hashes(text: str) -> tuple[int, ...]:
    """Chained hashes of the text's whole leading blocks (equal runs = shared prefix)."""
    out: list[int] = []
    h = 0
    step = PREFIX_BLOCK_CHARS
    for i in range(0, min(len(text) // step, _MAX_BLOCKS) * step, step):
        h = hash((h, text[i : i + step]))
        out.append(h)
    return tuple(out)


def _prompt_parts(parsed: object) -> Iterable[str]:
    if isinstance(parsed, ollama.ChatRequest | canonical.ChatRequest):
        for m in parsed.messages or ():
            yield m.role
            yield m.content or ""
    elif isinstance(parsed, ollama.GenerateRequest):
        yield parsed.system or ""
        yield parsed.prompt or ""
    elif isinstance(parsed, canonical.CompletionRequest):
        yield parsed.system or ""
        yield parsed.prompt


def _conversation_key(parsed: object) -> str | None:
    """A chat's identity across turns: its first two messages (system + first user)."""
    if isinstance(parsed, ollama.ChatRequest | canonical.ChatRequest):
        msgs = parsed.messages or []
        if len(msgs) >= 3:  # a follow-up turn: there is a conversation to stick to
            return f"c{hash((msgs[0].content, msgs[1].content)) & 0xFFFFFFFFFFFF:x}"
    return None


def request_info(ctx: RequestContext) -> RequestInfo:
    tenants = ctx.gw.settings.tenants
    tenant = session = asked = max_wait = None
    for name, value in ctx.scope["headers"]:
        if not name.startswith(b"x-corral-"):
            continue
        if name == b"x-corral-tenant" and tenants.trust_header:
            tenant = value.decode("latin-1")[:128]
        elif name == b"x-corral-session":
            session = value.decode("latin-1")[:128]
        elif name == b"x-corral-priority":
            try:
                asked = int(value)
            except ValueError:
                pass
        elif name == b"x-corral-max-wait":
            try:
                max_wait = max(0.0, float(value))
            except ValueError:
                pass
    who = ctx.identity
    weight = None
    if who is not None:
        # With keys, the key's user is the tenant and no header can claim another.
        tenant = who.user or "env"
        weight = who.group_weight
        if weight is None and who.group is not None:
            weight = tenants.weights.get(who.group)
        priority = tenants.priorities.get(
            tenant,
            tenants.priorities.get(who.group, _DEFAULT_PRIORITY)
            if who.group
            else _DEFAULT_PRIORITY,
        )
    else:
        if tenant is None:
            client = ctx.scope.get("client")
            tenant = client[0] if client else ""
        priority = tenants.priorities.get(tenant, _DEFAULT_PRIORITY)
    if asked is not None:
        priority = min(priority, asked)  # a header may only lower the class
    text = "\n".join(_prompt_parts(ctx.parsed))
    return RequestInfo(
        ctx.model,
        ctx.endpoint,
        ctx.request_id,
        session=session or _conversation_key(ctx.parsed),
        tenant=tenant,
        weight=tenants.weight(tenant) if weight is None else weight,
        priority=priority,
        prompt_tokens=len(text) // 4,
        max_tokens=getattr(getattr(ctx.parsed, "sampling", None), "max_tokens", None),
        prefix=prefix_hashes(text),
        max_wait_s=max_wait,
    )
