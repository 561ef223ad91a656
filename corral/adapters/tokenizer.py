"""Counting tokens with a backend's own tokenizer, for answers that came without counts.

Two OpenAI-kind engines expose their tokenizer over HTTP, each its own way:

    vLLM       POST /tokenize {"model", "messages" | "prompt"}  ->  {"count", "tokens", ...}
               (with ``messages`` the chat template is applied, as for the chat itself)
    llama.cpp  POST /apply-template {"messages"}                ->  {"prompt"}
               POST /tokenize {"content", "add_special"}        ->  {"tokens"}

Which one a backend speaks is learned from its first answer: vLLM's carries ``count``;
llama.cpp ignores fields it does not know and answers ``{"tokens": []}``, which is how
it gives itself away. A backend answering 404 (Ollama's /v1, TGI, LM Studio, ...) has
no tokenizer to ask; that is remembered for a while, so it is not asked on every
request. Each call is bounded by a timeout; a failure means "not counted" (the caller
keeps its estimate), never an error.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from corral.adapters.upstream import Transport, UpstreamRequest

__all__ = ["Flavour", "Prompt", "Tokenizers"]

Flavour = Literal["vllm", "llamacpp", "none"]

_HEADERS = {"content-type": "application/json"}
_NO_TOKENIZER = frozenset((404, 405, 501))  # the path is not there at all


@dataclass(frozen=True, slots=True)
class Prompt:
    """What was sent to the backend, in the OpenAI dialect: a chat or a plain prompt."""

    messages: list[Any] | None = None
    tools: list[Any] | None = None
    text: str | None = None

    @classmethod
    def of_request(cls, path: str, body: bytes) -> Prompt | None:
        """The prompt of an upstream OpenAI request body; None if it has none to count
        (a list of prompts, token ids, embeddings)."""
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return None
        if not isinstance(data, dict):
            return None
        if path.endswith("/chat/completions"):
            messages = data.get("messages")
            tools = data.get("tools")
            if isinstance(messages, list) and messages:
                return cls(messages=messages, tools=tools if isinstance(tools, list) else None)
            return None
        prompt = data.get("prompt")
        return cls(text=prompt) if isinstance(prompt, str) else None


class _Unreadable(Exception):
    """The backend answered something that is not a token count."""


class Tokenizers:
    """Counts tokens on the backends that can; remembers which kind each one is."""

    def __init__(self, *, timeout_s: float, forget_none_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        self.forget_none_s = forget_none_s  # a backend without one is asked again after this
        self._flavours: dict[str, tuple[Flavour, float]] = {}

    def flavour(self, backend: str) -> Flavour | None:
        """What ``backend`` was found to be, or None while unknown."""
        known = self._flavours.get(backend)
        if known is None:
            return None
        flavour, when = known
        if flavour == "none" and time.monotonic() - when > self.forget_none_s:
            del self._flavours[backend]
            return None
        return flavour

    def forget(self, backend: str) -> None:
        self._flavours.pop(backend, None)

    async def count(
        self, backend: str, transport: Transport, model: str, prompt: Prompt, answer: str
    ) -> tuple[int, int] | None:
        """(prompt tokens, answer tokens) as ``backend``'s tokenizer counts them, or None
        when it has none or could not answer in time."""
        flavour = self.flavour(backend)
        if flavour == "none":
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                if flavour == "llamacpp":
                    return await _llamacpp(transport, prompt, answer)
                n_prompt, found = await _vllm_prompt(transport, model, prompt)
                if found is not None:
                    self._flavours[backend] = (found, time.monotonic())
                if found == "none":
                    return None
                if found == "llamacpp":
                    return await _llamacpp(transport, prompt, answer)
                assert n_prompt is not None
                return n_prompt, await _vllm_text(transport, model, answer)
        except Exception:  # late, refused, unreadable, a transport's own errors: not counted
            return None


async def _post(transport: Transport, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
    request = UpstreamRequest("POST", path, msgspec.json.encode(payload), _HEADERS)
    resp = await transport.send(request)
    try:
        body = await resp.read()
    finally:
        resp.close()
    if resp.status != 200:
        return resp.status, None
    return 200, msgspec.json.decode(body)


async def _vllm_prompt(
    transport: Transport, model: str, prompt: Prompt
) -> tuple[int | None, Flavour | None]:
    """The prompt's count from vLLM's /tokenize, and what the answer says the backend
    is (None: could not tell, e.g. a 500)."""
    payload: dict[str, Any] = {"model": model}
    if prompt.messages is not None:
        payload["messages"] = prompt.messages
        payload["add_generation_prompt"] = True
        if prompt.tools:
            payload["tools"] = prompt.tools
    else:
        payload["prompt"] = prompt.text or ""
    status, data = await _post(transport, "/tokenize", payload)
    if status in _NO_TOKENIZER:
        return None, "none"
    if status != 200 or not isinstance(data, dict):
        raise _Unreadable(f"/tokenize answered {status}")
    count = data.get("count")
    if isinstance(count, int) and not isinstance(count, bool):
        return count, "vllm"
    if isinstance(data.get("tokens"), list):
        return None, "llamacpp"  # llama.cpp: it read no "content", so counted nothing
    return None, "none"


async def _vllm_text(transport: Transport, model: str, text: str) -> int:
    if not text:
        return 0
    payload = {"model": model, "prompt": text, "add_special_tokens": False}
    status, data = await _post(transport, "/tokenize", payload)
    count = data.get("count") if status == 200 and isinstance(data, dict) else None
    if not isinstance(count, int) or isinstance(count, bool):
        raise _Unreadable(f"/tokenize answered {status}")
    return count


async def _llamacpp(transport: Transport, prompt: Prompt, answer: str) -> tuple[int, int]:
    text = prompt.text
    if text is None:
        # The chat as the engine's template renders it: its tokens are the chat's
        # prompt_tokens exactly (docs/engines.md).
        payload: dict[str, Any] = {"messages": prompt.messages}
        if prompt.tools:
            payload["tools"] = prompt.tools
        status, data = await _post(transport, "/apply-template", payload)
        text = data.get("prompt") if status == 200 and isinstance(data, dict) else None
        if not isinstance(text, str):
            raise _Unreadable(f"/apply-template answered {status}")
    # The engine adds its special tokens (BOS) to a prompt, never to what it generated.
    n_prompt = await _llamacpp_count(transport, text, add_special=True)
    n_answer = await _llamacpp_count(transport, answer, add_special=False) if answer else 0
    return n_prompt, n_answer


async def _llamacpp_count(transport: Transport, text: str, *, add_special: bool) -> int:
    payload = {"content": text, "add_special": add_special}
    status, data = await _post(transport, "/tokenize", payload)
    tokens = data.get("tokens") if status == 200 and isinstance(data, dict) else None
    if not isinstance(tokens, list):
        raise _Unreadable(f"/tokenize answered {status}")
    return len(tokens)
