"""Deterministic text, token counts, tool calls and embeddings for the simulator.

Everything is a pure function of (model, prompt, seed): the same request gets the same
answer on every node, which lets tests and benchmarks compare runs byte for byte.
Counts follow the usual rule of thumb of ~4 characters per prompt token; one output
token is one word (or, for JSON output, a 4-character piece).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = [
    "chat_prompt",
    "embedding",
    "output_length",
    "output_tokens",
    "prompt_tokens",
    "seeded",
    "tool_call",
]

_PROSE = (
    "the of and to in is that it for as with was on be by this are from at or an have not "
    "which but they has one all can will more their there would about been when were what "
    "some so other into time only new these two may first any like then now such over most "
    "also after many where made must through back years much way well down should because "
    "each just those people how too little state good very make world still own see men "
    "work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three "
    "llama herd corral meadow river stone cloud signal bridge lantern quiet garden silver "
    "engine harbor window morning answer simple number reason question system model token "
    "stream router backend gateway cluster memory context prompt careful steady bright"
)
_WORDS = tuple(_PROSE.split())

_CHAT_OVERHEAD = 4  # template tokens around each message (role markers, separators)


def seeded(*parts: object) -> random.Random:
    """A PRNG seeded from the given parts, stable across processes and Python versions."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def prompt_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def chat_prompt(messages: Sequence[Mapping[str, Any]], system: str = "") -> tuple[str, int]:
    """The text a chat renders to (for seeding) and its token count with template overhead."""
    parts = [system] if system else []
    count = prompt_tokens(system) + (_CHAT_OVERHEAD if system else 0)
    for msg in messages:
        content = str(msg.get("content") or "")
        parts.append(f"{msg.get('role', '')}:{content}")
        count += prompt_tokens(content) + _CHAT_OVERHEAD
    return "\n".join(parts), count + 1


def output_length(model: str, prompt: str, seed: object, num_predict: int | None) -> int:
    """num_predict when the client set one (>= 0), else a stable length in [20, 120]."""
    if num_predict is not None and num_predict >= 0:
        return num_predict
    return seeded("len", model, prompt, seed).randint(20, 120)


def output_tokens(
    model: str, prompt: str, seed: object, n: int, fmt: Any = None
) -> tuple[list[str], bool]:
    """The answer's token pieces, and whether ``n`` cut it short (done_reason "length").

    Plain text is ``n`` words in sentences. With ``format`` ("json" or a JSON schema) the
    answer is a JSON document whose pieces are 4 characters each; ``n`` may truncate it,
    as a real model's would be.
    """
    rng = seeded("text", model, prompt, seed)
    if fmt:
        doc = msgspec.json.encode(_json_value(fmt if isinstance(fmt, dict) else {}, rng))
        text = doc.decode()
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        return pieces[:n], n < len(pieces)
    words = rng.choices(_WORDS, k=n)
    # Sentences of 6-14 words: one draw per sentence keeps this cheap on the hot path.
    start = 0
    while start < n:
        end = min(start + rng.randint(6, 14), n)
        words[start] = words[start].capitalize()
        words[end - 1] += "."
        start = end
    out = [" " + w for w in words]
    if out:
        out[0] = words[0]
    return out, False


def _json_value(schema: Mapping[str, Any], rng: random.Random, depth: int = 0) -> Any:
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict) or not props:
            return {"answer": " ".join(rng.choices(_WORDS, k=6))}
        if depth > 4:
            return {}
        return {str(k): _json_value(v or {}, rng, depth + 1) for k, v in props.items()}
    if kind == "array":
        item = schema.get("items") or {"type": "string"}
        return [_json_value(item, rng, depth + 1) for _ in range(rng.randint(1, 3))]
    if kind == "integer":
        return rng.randint(0, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return " ".join(rng.choices(_WORDS, k=rng.randint(1, 4)))


def tool_call(
    tools: Sequence[Mapping[str, Any]], messages: Sequence[Mapping[str, Any]], seed: object
) -> dict[str, Any] | None:
    """A tool call when the last user message asks for one, else None.

    "Asks" means it names a tool's function, or says "tool"/"call"/"use". The
    arguments are a JSON object filled from the function's parameter schema.
    """
    if not tools or not messages or messages[-1].get("role") != "user":
        return None
    text = str(messages[-1].get("content") or "").lower()
    funcs = [t.get("function") or {} for t in tools if isinstance(t, Mapping)]
    funcs = [f for f in funcs if f.get("name")]
    if not funcs:
        return None
    chosen = next((f for f in funcs if str(f["name"]).lower() in text), None)
    if chosen is None and any(w in text for w in ("tool", "call", "use ")):
        chosen = funcs[0]
    if chosen is None:
        return None
    rng = seeded("tool", chosen["name"], text, seed)
    params = chosen.get("parameters") or {}
    props = params.get("properties") or {}
    args = {str(k): _json_value(v or {}, rng, 1) for k, v in props.items()}
    return {"function": {"name": str(chosen["name"]), "arguments": args}}


def embedding(model: str, text: str, dim: int, dimensions: int | None = None) -> list[float]:
    """A unit-norm vector of ``dim`` floats, stable for (model, text).

    ``dimensions`` between 0 and ``dim`` (exclusive) keeps that many first components,
    normalized again: both servers' ``dimensions`` option.
    """
    rng = seeded("embed", model, text)
    vec = _unit([rng.gauss(0.0, 1.0) for _ in range(max(dim, 1))])
    if dimensions is not None and 0 < dimensions < len(vec):
        vec = _unit(vec[:dimensions])
    return vec


def _unit(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]
