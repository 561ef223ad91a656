"""Hot-path cost of the limits: µs per `admit` stage plus its end-of-request settle.

    python bench/admit.py [--n 200000]

Runs the real `admit` stage and `Limiter.finish` over one RequestContext, as the
pipeline does, with no limits set (the stage returns at once), with every limit set
(rpm, tpm, concurrency and a monthly budget, none reached), and a refusal (rpm 0).
Counts are in memory, so no I/O is involved; the numbers are pure CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from corral.adapters.store.keycache import Identity
from corral.adapters.store.quota import UserBudget
from corral.app.limits import admit
from corral.app.pipeline import RequestContext
from corral.config import load_settings
from corral.core.errors import RateLimited
from corral.core.limits import period_bounds


def _identity(**limits: int | None) -> Identity:
    return Identity(
        user="alice",
        group=None,
        role="user",
        scopes=frozenset(("inference",)),
        models=None,
        expires_at=None,
        prefix="k3x9q2mf",
        **limits,  # type: ignore[arg-type]
    )


async def _run(n: int, who: Identity, budget: bool) -> float:
    from corral.app.gateway import Gateway

    gw = Gateway(load_settings(None, environ={}))
    limiter = gw.auth.limits
    if budget:
        start, end = period_bounds("month", datetime.now(UTC))
        limiter.budgets = {"alice": UserBudget(1, 10**15, "month", start, end, 0)}
    ctx = RequestContext(gw, {"headers": []}, None, None, "/api/chat", "ollama", "r", 0.0)  # type: ignore[arg-type]
    ctx.body = b"x" * 400
    ctx.identity = who
    ctx.prompt_tokens, ctx.completion_tokens = 100, 20
    t0 = time.perf_counter()
    for _ in range(n):
        ctx.admission = ctx.on_end = None
        try:
            await admit(ctx)
        except RateLimited:
            continue
        if ctx.on_end is not None:
            ctx.on_end(ctx)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    big = 10**12
    cases = [
        ("no limits set", _identity(), False),
        ("rpm + tpm + concurrency + budget", _identity(rpm=big, tpm=big, max_concurrent=big), True),
        ("refused (rpm 0)", _identity(rpm=0), False),
    ]
    for name, who, budget in cases:
        best = min(asyncio.run(_run(n, who, budget)) for _ in range(3))
        print(f"{name:36s} {best:6.2f} µs per admit + finish")


if __name__ == "__main__":
    main()
