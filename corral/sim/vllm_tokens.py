"""A stand-in tokenizer and chat template for the simulated vLLM server.

Token ids come from 4-character pieces of the text (the usual ~4 characters per token),
each hashed into the vocabulary. Two prompts that share their first N characters share
their first N // 4 tokens, so shared system prompts and conversation histories hit the
prefix cache as they would on a real server. :class:`Vocab` remembers the pieces it has
seen so ``/detokenize`` can give the text back.

The chat template is ChatML (Qwen's): ``<|im_start|>role\\ncontent<|im_end|>\\n`` per
message, tools rendered into a system block first, and the assistant header last.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["VOCAB_SIZE", "Vocab", "content_text", "encode", "render_chat"]

VOCAB_SIZE = 151_643  # Qwen2's, a common vLLM model family
_PIECE = 4
_IMAGE_TOKENS = 256  # what one image costs in the prompt, roughly


def encode(text: str) -> list[int]:
    """Token ids of ``text``: one per 4 characters, stable across processes."""
    return [
        zlib.crc32(text[i : i + _PIECE].encode()) % VOCAB_SIZE for i in range(0, len(text), _PIECE)
    ]


class Vocab:
    """Id -> piece for every piece encoded so far (bounded), so ids decode back to text."""

    def __init__(self, limit: int = 200_000) -> None:
        self._pieces: dict[int, str] = {}
        self._limit = limit

    def encode(self, text: str) -> list[int]:
        ids = encode(text)
        if len(self._pieces) < self._limit:
            for n, i in enumerate(range(0, len(text), _PIECE)):
                self._pieces.setdefault(ids[n], text[i : i + _PIECE])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        # An id never seen decodes to a placeholder piece, as an unused vocab entry would.
        return "".join(self._pieces.get(i, f"<|{i}|>") for i in ids)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self._pieces.get(i, f"<|{i}|>") for i in ids]


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind == "text" or (kind is None and "text" in part):
                out.append(str(part.get("text") or ""))
            elif kind in ("image_url", "input_image", "image"):
                out.append(_image_placeholder(part))
    return "".join(out)


def _image_placeholder(part: Mapping[str, Any]) -> str:
    # The same image gives the same tokens (vLLM hashes media for the prefix cache too).
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, Mapping) else ref
    digest = hashlib.sha256(str(url).encode()).hexdigest()
    body = (digest * (_IMAGE_TOKENS * _PIECE // len(digest) + 1))[: _IMAGE_TOKENS * _PIECE - 26]
    return f"<|vision_start|>{body}<|vision_end|>"


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] = (),
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text of a chat, as a ChatML template renders it."""
    parts: list[str] = []
    if tools:
        listing = "\n".join(json.dumps(t, sort_keys=True) for t in tools)
        parts.append(f"<|im_start|>system\n# Tools\n<tools>\n{listing}\n</tools><|im_end|>\n")
    for msg in messages:
        role = str(msg.get("role") or "user")
        body = content_text(msg.get("content"))
        for call in msg.get("tool_calls") or ():
            if isinstance(call, Mapping):
                fn = call.get("function") or {}
                body += f"\n<tool_call>{json.dumps(fn, sort_keys=True)}</tool_call>"
        parts.append(f"<|im_start|>{role}\n{body}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)
