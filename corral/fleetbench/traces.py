"""The real workload traces shipped in ``data/``: read them as plain rows.

Three slices (see ``data/ATTRIBUTION.md`` for source, licence and trimming):

* ``azure-llm-2023-conv.csv`` and ``azure-llm-2023-code.csv`` — the first rows of the
  Azure LLM inference traces 2023 (Splitwise), verbatim: wall-clock ``TIMESTAMP``,
  ``ContextTokens``, ``GeneratedTokens``;
* ``mooncake-conversation.csv`` — the first rows of Mooncake's FAST'25 conversation
  trace, re-encoded from JSONL to CSV to stay small: ``timestamp_ms``, ``input_length``,
  ``output_length``, ``hash_ids`` where runs of consecutive ids are written ``a-b``
  (``0 68-112`` is ``[0, 68, 69, …, 112]``). :func:`mooncake_slice_lines` is the
  re-encoder.

Every loader returns :class:`TraceRow` with ``t`` in seconds since the slice's first row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import resources
from typing import Literal

__all__ = [
    "MOONCAKE_BLOCK_TOKENS",
    "TraceRow",
    "decode_runs",
    "describe",
    "encode_runs",
    "load_azure",
    "load_mooncake",
    "mooncake_slice_lines",
    "parse_azure",
    "parse_mooncake",
    "spread_ties",
]

MOONCAKE_BLOCK_TOKENS = 512  # tokens per Mooncake hash id

_AZURE_FILES = {"conv": "azure-llm-2023-conv.csv", "code": "azure-llm-2023-code.csv"}
_MOONCAKE_FILE = "mooncake-conversation.csv"
_MOONCAKE_HEADER = "timestamp_ms,input_length,output_length,hash_ids"


@dataclass(frozen=True, slots=True)
class TraceRow:
    t: float  # seconds since the first row of the trace
    prompt_tokens: int
    output_tokens: int
    prefix: tuple[int, ...] = ()  # Mooncake: one id per 512-token prompt block


def _data_text(name: str) -> str:
    return (resources.files("corral.fleetbench") / "data" / name).read_text(encoding="utf-8")


def load_azure(service: Literal["conv", "code"]) -> list[TraceRow]:
    """The shipped slice of the Azure 2023 conversation or code-completion trace."""
    return parse_azure(_data_text(_AZURE_FILES[service]).splitlines())


def load_mooncake() -> list[TraceRow]:
    """The shipped slice of the Mooncake conversation trace, hash ids as ``prefix``."""
    return parse_mooncake(_data_text(_MOONCAKE_FILE).splitlines())


def _azure_seconds(stamp: str) -> float:
    # Seven fractional digits, which datetime.fromisoformat on 3.11 does not take.
    whole, _, frac = stamp.strip().partition(".")
    base = datetime.fromisoformat(whole).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def parse_azure(lines: Iterable[str]) -> list[TraceRow]:
    """Rows of an Azure LLM trace CSV (with its header line)."""
    rows: list[TraceRow] = []
    t0: float | None = None
    for rec in csv.DictReader(lines):
        t = _azure_seconds(rec["TIMESTAMP"])
        if t0 is None:
            t0 = t
        rows.append(TraceRow(t - t0, int(rec["ContextTokens"]), int(rec["GeneratedTokens"])))
    return rows


def parse_mooncake(lines: Iterable[str]) -> list[TraceRow]:
    """Rows of the compact Mooncake CSV written by :func:`mooncake_slice_lines`."""
    rows: list[TraceRow] = []
    t0: float | None = None
    for rec in csv.DictReader(lines):
        t = int(rec["timestamp_ms"]) / 1000.0
        if t0 is None:
            t0 = t
        rows.append(
            TraceRow(
                t - t0,
                int(rec["input_length"]),
                int(rec["output_length"]),
                decode_runs(rec["hash_ids"]),
            )
        )
    return rows


def encode_runs(ids: Sequence[int]) -> str:
    """``[0, 68, 69, 70]`` -> ``"0 68-70"``: runs of consecutive ids collapse."""
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return " ".join(parts)


def decode_runs(text: str) -> tuple[int, ...]:
    """Inverse of :func:`encode_runs`."""
    out: list[int] = []
    for part in text.split():
        lo, sep, hi = part.partition("-")
        if sep:
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(lo))
    return tuple(out)


def mooncake_slice_lines(jsonl_lines: Iterable[str], limit: int) -> list[str]:
    """Re-encode the first ``limit`` rows of a Mooncake JSONL trace as the compact CSV.

    This is how ``data/mooncake-conversation.csv`` was made; values are unchanged.
    """
    out = [_MOONCAKE_HEADER]
    for line in jsonl_lines:
        if len(out) > limit:
            break
        if not line.strip():
            continue
        rec = json.loads(line)
        out.append(
            f"{int(rec['timestamp'])},{int(rec['input_length'])},"
            f"{int(rec['output_length'])},{encode_runs(rec['hash_ids'])}"
        )
    return out


def spread_ties(rows: Sequence[TraceRow], width: float = 1.0) -> list[TraceRow]:
    """Spread rows that share one timestamp evenly over ``[t, t + width)``.

    Mooncake's timestamps are whole seconds (up to 28 rows in one), so a raw replay
    fires bursts; spreading them keeps the order and the per-second counts.
    """
    out: list[TraceRow] = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j].t == rows[i].t:
            j += 1
        k = j - i
        out.extend(replace(rows[i + n], t=rows[i].t + width * n / k) for n in range(k))
        i = j
    return out


def describe(rows: Sequence[TraceRow]) -> dict[str, float]:
    """Count, span (s), mean rate (count / span, req/s) and mean token counts of some rows."""
    if not rows:
        return {"count": 0, "span_s": 0.0, "rate_rps": 0.0, "mean_prompt": 0.0, "mean_output": 0.0}
    span = rows[-1].t - rows[0].t
    n = len(rows)
    return {
        "count": n,
        "span_s": span,
        "rate_rps": n / span if span > 0 else 0.0,
        "mean_prompt": sum(r.prompt_tokens for r in rows) / n,
        "mean_output": sum(r.output_tokens for r in rows) / n,
    }
