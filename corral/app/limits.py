"""Rate limits and token budgets on the request path: the `admit` stage and its counts.

`admit` runs after the request is parsed and before the scheduler sees it, only when
API keys are on. It asks the counters (corral/core/limits.py) about the key's requests
and tokens per minute, the user's requests at once and the user's budget, and refuses
with 429 + Retry-After or 403 in the client's dialect. The request's place is given
back and its tokens charged in the pipeline's finally path, however it ended; a
stream's output is also charged while it runs (`Limiter.charge`, from the relay's
meter every 16 tokens), so the end only settles the difference.

Budgets need each user's spending in the period. It is loaded from the store at start,
kept in memory and charged per request, and on every key-cache reload the charges made
since are added to the store (``quota_periods``) and the totals read back (so other
processes' spending arrives too): no query per request.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from corral.adapters.store.db import Store
from corral.adapters.store.keycache import ENV_USER, Identity
from corral.adapters.store.quota import UserBudget, charge_period, load_budgets
from corral.app.pipeline import RequestContext
from corral.core.errors import BudgetExhausted, RateLimited
from corral.core.limits import (
    Admission,
    Counters,
    Limits,
    LocalCounters,
    Refusal,
    period_bounds,
)

__all__ = ["Limiter", "admit"]

log = logging.getLogger("corral.limits")
_BYTES_PER_TOKEN = 4  # the estimate at admission; the real count settles it


class Limiter:
    """The counters, each user's budget, and the charges not yet written to the store."""

    def __init__(self, counters: Counters | None = None) -> None:
        self.counters: Counters = counters if counters is not None else LocalCounters()
        self.budgets: dict[str, UserBudget] = {}
        self._pending: dict[tuple[str, datetime], int] = {}
        self._limits: dict[str, tuple[Identity, Limits | None]] = {}

    def limits_for(self, who: Identity) -> Limits | None:
        """The request's limits (None: none apply), built once per key and reload."""
        cached = self._limits.get(who.prefix)
        if cached is not None and cached[0] is who:
            return cached[1]
        user = who.user or ENV_USER
        budget = self.budgets.get(user)
        limits = Limits(
            key=who.prefix,
            user=user,
            rpm=who.rpm,
            tpm=who.tpm,
            max_concurrent=who.max_concurrent,
            budget=None if budget is None else budget.tokens,
            period=budget.period if budget is not None else "month",
        )
        found = None if limits.unlimited else limits
        self._limits[who.prefix] = (who, found)
        return found

    def charge(self, admission: Admission, tokens: int) -> None:
        """A running stream produced ``tokens`` more: charge them now, not at the end."""
        self.counters.charge(admission, tokens)
        if admission.period_start is not None and tokens > 0:
            slot = (admission.limits.user, admission.period_start)
            self._pending[slot] = self._pending.get(slot, 0) + tokens

    def finish(self, ctx: RequestContext) -> None:
        """The pipeline's end-of-request hook: free the place, settle the tokens."""
        admission = ctx.admission
        if not isinstance(admission, Admission):
            return
        if ctx.prompt_tokens is not None or ctx.completion_tokens is not None:
            tokens = (ctx.prompt_tokens or 0) + (ctx.completion_tokens or 0)
        elif ctx.decision is not None:
            # Reached a backend but no counts came back (the client left mid-stream, the
            # backend died): the prompt's estimate and the output streamed so far.
            tokens = len(ctx.body) // _BYTES_PER_TOKEN + ctx.streamed_tokens
        else:
            tokens = 0  # refused or failed before any backend saw it
        extra = admission.settled(tokens)
        self.counters.finish(admission, tokens, datetime.now(UTC))
        if admission.period_start is not None and extra > 0:
            slot = (admission.limits.user, admission.period_start)
            self._pending[slot] = self._pending.get(slot, 0) + extra

    async def flush(self, store: Store) -> None:
        """Add the charges made since the last flush to the store's period counts."""
        pending, self._pending = self._pending, {}
        for (user, start), tokens in pending.items():
            budget = self.budgets.get(user)
            if budget is None:
                continue  # the user was removed or disabled meanwhile
            end = period_bounds(budget.period, start)[1]  # the request's period, maybe past
            try:
                await charge_period(store, budget.user_id, start, end, tokens)
            except Exception:
                self._pending[(user, start)] = self._pending.get((user, start), 0) + tokens
                raise

    async def reload(self, store: Store) -> None:
        """Write what was charged, then read every budget and its spending back."""
        await self.flush(store)
        budgets = await load_budgets(store, datetime.now(UTC))
        for user, budget in budgets.items():
            # Charges made while the store answered are in _pending, not yet in `used`.
            extra = self._pending.get((user, budget.period_start), 0)
            self.counters.set_spent(user, budget.period_start, budget.used + extra)
        self.budgets = budgets
        self._limits = {}


async def admit(ctx: RequestContext) -> None:
    """The key's rate limits and the user's concurrency and budget (429 / 403)."""
    who = ctx.identity
    if who is None:
        return  # auth is off: no keys, so no limits
    limiter = ctx.gw.auth.limits
    limits = limiter.limits_for(who)
    if limits is None:
        return
    got = await limiter.counters.admit(limits, len(ctx.body) // _BYTES_PER_TOKEN, datetime.now(UTC))
    if isinstance(got, Refusal):
        error = BudgetExhausted if got.status == 403 else RateLimited
        raise error(got.message, retry_after=got.retry_after)
    ctx.admission = got
    ctx.on_end = limiter.finish
