"""Whether and when to try a failed request again: classification, backoff, budget.

A failure is *transient* when another backend (or the same one a little later) may
well succeed: no connection, a timeout, a hung backend, a 5xx, an engine saying it
is busy. It is *permanent* when the request itself is at fault (400, 404, 413, ...):
retrying it elsewhere only repeats the error, so it goes back to the client at once
and does not count against the backend's breaker.

Retries are bounded twice: per request (``max_attempts``) and across the gateway by a
:class:`RetryBudget`, so that during an outage the fleet sees at most about
``1 + ratio`` times the offered load instead of ``max_attempts`` times it.

Pure: time comes in as ``now`` seconds and randomness from a seeded
``random.Random``, so the live gateway and the fleet simulator make the same choices.
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "NO_RESPONSE",
    "Backoff",
    "RetryBudget",
    "RetryDecision",
    "RetryPolicy",
    "SlidingCounts",
    "TtftDeadline",
    "Verdict",
    "classify",
    "is_model_missing",
    "retry_after_s",
]

# Outcome.status when no HTTP answer came (connect error, reset, timeout, hung).
NO_RESPONSE = 0


class Verdict(NamedTuple):
    transient: bool
    reason: str


_KINDS = {
    "connect": "connect error",
    "timeout": "timed out",
    "ttft_timeout": "no first token before the deadline (backend hung)",
    "reset": "connection reset",
}

# Transient HTTP answers, and why. 500 is here because Ollama answers 500 when a model
# fails to load (out of memory, runner crashed): another node may well load it. 429
# from an engine means its own queue is full, not that the client is over a quota.
_TRANSIENT_HTTP = {
    408: "request timeout",
    425: "too early",
    429: "engine overloaded",
    500: "server error (often a failed model load)",
    502: "bad gateway",
    503: "busy or unavailable",
    504: "gateway timeout",
}

# Permanent answers worth naming; any other 4xx is permanent too. 499 is Ollama's
# "client went away": nobody is left to retry for. 501/505 mean the engine cannot
# do this at all.
_PERMANENT_HTTP = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    413: "request too large",
    422: "invalid request",
    499: "client closed the request",
    501: "not implemented",
    505: "HTTP version not supported",
}


def classify(status: int | None, kind: str = "http") -> Verdict:
    """Say whether a failed attempt is worth retrying elsewhere, and why.

    ``kind`` is how it failed: ``connect``, ``timeout``, ``ttft_timeout``, ``reset``
    (all transient: nothing says the request was wrong) or ``http`` with the
    answer's ``status``. An unknown kind is treated as transient: an unexpected
    transport failure should not be blamed on the client.
    """
    if kind != "http":
        text = _KINDS.get(kind)
        if text is None:
            return Verdict(True, f"{kind} (unknown failure kind, treated as transient)")
        return Verdict(True, text)
    if status is None or status == NO_RESPONSE:
        return Verdict(True, "no HTTP status")
    text = _TRANSIENT_HTTP.get(status)
    if text is not None:
        return Verdict(True, f"HTTP {status}: {text}")
    text = _PERMANENT_HTTP.get(status)
    if text is not None:
        return Verdict(False, f"HTTP {status}: {text}")
    if 500 <= status < 600:
        return Verdict(True, f"HTTP {status}: server error")
    if 400 <= status < 500:
        return Verdict(False, f"HTTP {status}: client error")
    return Verdict(False, f"HTTP {status}: unexpected status for a failure")


# Ollama: 'model "x" not found, try pulling it first' (JSON-escaped quotes in the raw
# body; older releases used single quotes). vLLM and OpenAI: 'The model `x` does not
# exist.' A bare "404 page not found" (wrong path) must not match.
_MISSING = re.compile(
    r"model\s+[\"'`\\]*[^\s\"'`\\]+[\"'`\\]*\s+(?:not found|does not exist)", re.I
)


def is_model_missing(status: int | None, body_text: str | bytes) -> bool:
    """True when a backend answered that it does not hold the requested model.

    Its model list was stale: the gateway should drop the model from that backend
    and may try another holder, without blaming the backend's breaker.
    """
    if status != 404:
        return False
    if isinstance(body_text, bytes):
        body_text = body_text.decode("utf-8", "replace")
    return _MISSING.search(body_text) is not None


def retry_after_s(value: str | None, *, cap: float = 300.0) -> float | None:
    """Seconds from a ``Retry-After`` header in its delta-seconds form, capped.

    The HTTP-date form needs the wall clock, which core does not read: it gives None
    (as does a missing or malformed header), and the caller picks its own default.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


class SlidingCounts:
    """Two counters (``total``, ``marked``) over the last ``window_s`` seconds.

    Kept in ``buckets`` slices so memory stays fixed whatever the request rate; the
    window therefore slides in steps of ``window_s / buckets``.
    """

    __slots__ = ("_buckets", "_marked", "_n", "_total", "_width")

    def __init__(self, window_s: float, buckets: int = 10) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s must be > 0 and buckets >= 1")
        self._width = window_s / buckets
        self._n = buckets
        self._buckets: deque[list[int]] = deque()  # [bucket index, total, marked]
        self._total = 0
        self._marked = 0

    def _prune(self, index: int) -> None:
        buckets = self._buckets
        oldest = index - self._n
        while buckets and buckets[0][0] <= oldest:
            _, total, marked = buckets.popleft()
            self._total -= total
            self._marked -= marked

    def add(self, now: float, total: int = 1, marked: int = 0) -> None:
        index = math.floor(now / self._width)
        self._prune(index)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= index:
            last = buckets[-1]  # same slice (or a clock that stepped back): add to it
            last[1] += total
            last[2] += marked
        else:
            buckets.append([index, total, marked])
        self._total += total
        self._marked += marked

    def totals(self, now: float) -> tuple[int, int]:
        """``(total, marked)`` within the window ending at ``now``."""
        self._prune(math.floor(now / self._width))
        return self._total, self._marked

    def reset(self) -> None:
        self._buckets.clear()
        self._total = 0
        self._marked = 0


class Backoff:
    """Exponential backoff with full jitter: retry ``k`` waits U(0, min(cap, base·2^(k-1))).

    Full jitter spreads the retries of many requests that failed together, so they do
    not land on the next backend in one wave. Deterministic for a given seed or rng.
    """

    __slots__ = ("_rng", "base", "cap")

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 2.0,
        *,
        rng: random.Random | None = None,
        seed: int = 0,
    ) -> None:
        if base < 0 or cap < 0:
            raise ValueError("base and cap must be >= 0")
        self.base = base
        self.cap = cap
        self._rng = rng if rng is not None else random.Random(seed)

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt`` (1 = the first retry)."""
        exponent = min(max(attempt, 1) - 1, 62)  # beyond 2**62 the cap has long won
        return min(self.cap, self.base * float(2**exponent))

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(0.0, self.ceiling(attempt))


class RetryBudget:
    """Retries allowed: ``min_retries + ratio * requests`` over the last ``window_s``
    (``ratio`` inf: no budget at all).

    Call :meth:`on_request` once per client request (not per retry, or retries would
    grow their own allowance) and :meth:`try_spend` before each retry. In a full
    outage the retries therefore stay near ``ratio`` of the load; the floor lets a
    quiet gateway still retry a lone failure.
    """

    __slots__ = ("_counts", "min_retries", "ratio", "window_s")

    def __init__(self, ratio: float = 0.2, window_s: float = 10.0, min_retries: int = 3) -> None:
        if ratio < 0 or min_retries < 0:
            raise ValueError("ratio and min_retries must be >= 0")
        self.ratio = ratio
        self.window_s = window_s
        self.min_retries = min_retries
        self._counts = SlidingCounts(window_s)  # total = requests, marked = retries

    def on_request(self, now: float) -> None:
        self._counts.add(now, 1, 0)

    def allowance(self, now: float) -> float:
        requests, _ = self._counts.totals(now)
        return self.min_retries + self.ratio * requests

    def usage(self, now: float) -> tuple[int, int]:
        """``(requests, retries)`` counted in the current window."""
        return self._counts.totals(now)

    def try_spend(self, now: float) -> bool:
        if self.ratio == math.inf:  # no budget: only the attempt cap limits retries
            self._counts.add(now, 0, 1)
            return True
        requests, retries = self._counts.totals(now)
        if retries + 1 > self.min_retries + self.ratio * requests:
            return False
        self._counts.add(now, 0, 1)
        return True


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Whether to try again, after how long, and why (logged with the request)."""

    retry: bool
    delay_s: float
    reason: str


class RetryPolicy:
    """Per-request attempt cap + gateway-wide budget + backoff, as one decision."""

    __slots__ = ("backoff", "budget", "max_attempts")

    def __init__(
        self,
        max_attempts: int = 3,
        *,
        budget: RetryBudget | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.budget = budget if budget is not None else RetryBudget()
        self.backoff = backoff if backoff is not None else Backoff()

    def on_request(self, now: float) -> None:
        self.budget.on_request(now)

    def decide(
        self,
        verdict: Verdict,
        attempt: int,
        now: float,
        *,
        streamed: bool = False,
        backend_gone: bool = False,
    ) -> RetryDecision:
        """Attempt number ``attempt`` (1-based) failed with ``verdict``: go again?

        ``streamed`` means bytes already reached the client; a retry would repeat them.
        ``backend_gone`` means the backend refused the connection or dropped it (it is
        down or crashed): the work was lost, not done twice, so a retry elsewhere adds
        no load and spends no budget. The budget is for failures that may come from
        overload (busy, 5xx, timeouts), where retries would feed the fire.
        """
        if streamed:
            return RetryDecision(
                False, 0.0, f"no retry: answer already streaming ({verdict.reason})"
            )
        if not verdict.transient:
            return RetryDecision(False, 0.0, f"no retry: permanent failure ({verdict.reason})")
        if attempt >= self.max_attempts:
            return RetryDecision(
                False,
                0.0,
                f"no retry: {attempt}/{self.max_attempts} attempts used ({verdict.reason})",
            )
        if not backend_gone and not self.budget.try_spend(now):
            requests, retries = self.budget.usage(now)
            return RetryDecision(
                False,
                0.0,
                f"no retry: retry budget spent ({retries} retries for {requests} requests "
                f"in {self.budget.window_s:g}s) ({verdict.reason})",
            )
        delay = self.backoff.delay(attempt)
        return RetryDecision(
            True,
            delay,
            f"retry {attempt + 1}/{self.max_attempts} in {delay:.3f}s ({verdict.reason})",
        )


@dataclass(frozen=True, slots=True)
class TtftDeadline:
    """How long a dispatched request may go without its first token.

    A backend that accepted the connection but sends nothing is hung: past this
    deadline the gateway cancels the attempt and records it as a transient failure
    (``classify(None, "ttft_timeout")``, ``Outcome.status = NO_RESPONSE``), which
    counts against the backend's breaker like a connect error. A model that must load
    first gets ``load_s`` more, since cold loads take seconds to minutes.
    """

    first_token_s: float = 60.0
    load_s: float = 300.0

    def at(self, dispatched_at: float, *, loaded: bool = True) -> float:
        return dispatched_at + self.first_token_s + (0.0 if loaded else self.load_s)

    def expired(self, dispatched_at: float, now: float, *, loaded: bool = True) -> bool:
        return now >= self.at(dispatched_at, loaded=loaded)
