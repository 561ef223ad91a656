"""Parse an OpenAI chat or completion request as vLLM validates it, and plan its answer.

The answer is laid out up front as one *delta* per output token (content, reasoning or
a tool-call piece) so streaming and non-streaming give the same text, and the engine
model is told exactly how many tokens to generate. Text is deterministic: it depends on
the model, the prompt and ``seed`` (``temperature: 0`` is greedy and ignores the seed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from corral.sim import text
from corral.sim.catalogue import ModelSpec
from corral.sim.vllm_tokens import VOCAB_SIZE, Vocab, render_chat
from corral.sim.vllm_wire import (
    ApiError,
    Fields,
    ServedName,
    context_too_long,
    max_tokens_too_large,
    not_supported,
    validation_error,
)

__all__ = ["Call", "parse_chat", "parse_completion"]

_COMPLETION_DEFAULT_MAX_TOKENS = 16  # vLLM's CompletionRequest default, as OpenAI's


@dataclass
class Call:
    """One parsed request and its planned answer."""

    api: str  # "chat" | "completion"
    model: str
    stream: bool
    prompt_text: str
    prompt_ids: list[int]
    include_usage: bool = False
    continuous_usage: bool = False
    deltas: list[dict[str, Any]] = field(default_factory=list)  # one per output token
    finish_reason: str = "stop"
    stop_reason: str | None = None
    content: str | None = ""
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def output_tokens(self) -> int:
        return len(self.deltas)

    def usage(self, completion: int | None = None) -> dict[str, Any]:
        done = self.output_tokens if completion is None else completion
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + done,
            "completion_tokens": done,
            "prompt_tokens_details": None,
        }


@dataclass
class _Sampling:
    limit: int  # most output tokens allowed
    seed: Any
    stops: list[str]
    fmt: Any  # None, "json" or a JSON schema


def _value_error(msg: str, param: str | None = None) -> ApiError:
    # A validator's ValueError inside the request model: pydantic wraps it, FastAPI 400s.
    return validation_error("value_error", "", f"Value error, {msg}", None, param)


def _common(
    f: Fields, served: ServedName, spec: ModelSpec, api: str
) -> tuple[str, bool, bool, bool]:
    model = served.check(f.body.get("model"))
    if spec.embedding:
        raise not_supported(api)
    stream = bool(f.get("stream", bool, False))
    options = f.get("stream_options", dict)
    if options and not stream:
        raise _value_error(
            "Stream options can only be defined when `stream=True`.", "stream_options"
        )
    options = options or {}
    n = f.get("n", int, 1)
    if n < 1:
        raise ApiError(400, f"n must be at least 1, got {n}.")
    if n > 1:
        raise ApiError(400, f"The simulator answers one choice per request; got n={n}.", param="n")
    return (
        model,
        stream,
        bool(options.get("include_usage")),
        bool(options.get("continuous_usage_stats")),
    )


def _sampling(
    f: Fields, max_tokens: int | None, n_prompt: int, max_model_len: int, what: str
) -> _Sampling:
    if n_prompt >= max_model_len:
        raise context_too_long(max_model_len, n_prompt, what)
    if max_tokens is not None:
        if max_tokens < 1:
            raise ApiError(400, f"max_tokens must be at least 1, got {max_tokens}.")
        if n_prompt + max_tokens > max_model_len:
            raise max_tokens_too_large(max_tokens, max_model_len, n_prompt)
    temperature = f.get("temperature", float)
    if temperature is not None and temperature < 0:
        raise ApiError(400, f"temperature must be non-negative, got {temperature}.")
    seed = f.get("seed", int)
    stop = f.body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise validation_error("string_type", "stop", "Input should be a valid string", stop)
    fmt: Any = None
    rf = f.get("response_format", dict)
    if rf is not None:
        kind = rf.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise validation_error(
                "literal_error",
                "response_format",
                "Input should be 'text', 'json_object' or 'json_schema'",
                kind,
            )
        if kind == "json_object":
            fmt = "json"
        elif kind == "json_schema":
            spec = rf.get("json_schema")
            if not isinstance(spec, dict):
                raise _value_error("json_schema must be provided for response_format json_schema")
            schema = spec.get("schema")
            fmt = schema if isinstance(schema, dict) and schema else "json"
    limit = max_tokens if max_tokens is not None else max_model_len - n_prompt
    # Greedy decoding does not depend on the seed.
    return _Sampling(limit, "greedy" if temperature == 0 else seed, stops, fmt)


def parse_chat(
    body: dict[str, Any], served: ServedName, spec: ModelSpec, vocab: Vocab, max_model_len: int
) -> Call:
    f = Fields(body)
    messages = f.get("messages", list, required=True)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise validation_error("missing", f"messages.{i}.role", "Field required", msg)
    model, stream, usage, continuous = _common(f, served, spec, "Chat Completions")
    tools = f.get("tools", list)
    if tools == []:
        raise _value_error(
            "`tools` must not be an empty array. Either provide at least one tool or omit "
            "the field entirely.",
            "tools",
        )
    choice = body.get("tool_choice", "auto" if tools else "none")
    if choice not in (None, "none") and not tools:
        raise _value_error("When using `tool_choice`, `tools` must be set.", "tool_choice")
    prompt = render_chat(messages, tools or ())
    ids = vocab.encode(prompt)
    max_tokens = f.get("max_completion_tokens", int) or f.get("max_tokens", int)
    s = _sampling(f, max_tokens, len(ids), max_model_len, "messages")
    call = Call("chat", model, stream, prompt, ids, usage, continuous)
    kwargs = f.get("chat_template_kwargs", dict) or {}
    thinking = (
        "thinking" in spec.capabilities
        and f.get("include_reasoning", bool, True)
        and kwargs.get("enable_thinking", True) is not False
    )
    reasoning: list[str] = []
    if thinking:
        n = text.seeded("think-len", model, prompt, s.seed).randint(8, 30)
        reasoning, _ = text.output_tokens(model, "think\n" + prompt, s.seed, min(n, s.limit))
        call.reasoning = "".join(reasoning)
        call.deltas = [{"reasoning": p} for p in reasoning]
    room = s.limit - len(reasoning)
    tool = _tool_call(tools or [], choice, messages, s.seed) if tools else None
    if room <= 0:
        call.finish_reason, call.content = "length", None
    elif tool is not None and _tool_fits(tool, room):
        _plan_tool(
            call, tool, f"chatcmpl-tool-{text.seeded('id', prompt, s.seed).getrandbits(128):032x}"
        )
    else:
        _plan_text(call, s, room, lambda p: {"content": p})
    return call


def parse_completion(
    body: dict[str, Any], served: ServedName, spec: ModelSpec, vocab: Vocab, max_model_len: int
) -> Call:
    f = Fields(body)
    if "prompt" not in body or body["prompt"] is None:
        raise validation_error("missing", "prompt", "Field required", body)
    model, stream, usage, continuous = _common(f, served, spec, "Completions")
    if body.get("suffix") is not None:
        raise ApiError(400, "suffix is not currently supported")
    prompt_text, ids = _completion_prompt(body["prompt"], vocab)
    max_tokens = f.get("max_tokens", int, _COMPLETION_DEFAULT_MAX_TOKENS)
    s = _sampling(f, max_tokens, len(ids), max_model_len, "prompt")
    call = Call("completion", model, stream, prompt_text, ids, usage, continuous)
    _plan_text(call, s, s.limit, lambda p: {"text": p})
    return call


def _completion_prompt(prompt: Any, vocab: Vocab) -> tuple[str, list[int]]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt:
            raise ApiError(400, "Prompt cannot be empty", param="prompt")
        return prompt, vocab.encode(prompt)
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt)
    ):
        bad = [i for i in prompt if not 0 <= i < VOCAB_SIZE]
        if bad:
            raise ApiError(400, f"Token id {bad[0]} is out of vocabulary", param="prompt")
        return vocab.decode(prompt), list(prompt)
    if isinstance(prompt, list) and len(prompt) > 1:
        raise ApiError(400, "The simulator answers one prompt per request.", param="prompt")
    raise validation_error("string_type", "prompt", "Input should be a valid string", prompt)


def _plan_text(call: Call, s: _Sampling, room: int, delta: Any) -> None:
    if s.fmt is not None:
        pieces, cut = text.output_tokens(call.model, call.prompt_text, s.seed, room, s.fmt)
        reason = "length" if cut else "stop"
    else:
        natural = text.output_length(call.model, call.prompt_text, s.seed, None)
        pieces, _ = text.output_tokens(call.model, call.prompt_text, s.seed, min(natural, room))
        reason = "length" if natural > room else "stop"
    pieces, stop = _apply_stop(pieces, s.stops)
    if stop is not None:
        reason = "stop"
    call.finish_reason, call.stop_reason = reason, stop
    call.content = "".join(pieces)
    call.deltas += [delta(p) for p in pieces]


def _apply_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], str | None]:
    """Cut at the earliest stop string (not included, as vLLM's default)."""
    joined = "".join(pieces)
    found = [(joined.find(s), s) for s in stops if s and s in joined]
    if not found:
        return pieces, None
    at, stop = min(found)
    out: list[str] = []
    start = 0
    for piece in pieces:
        end = start + len(piece)
        if end > at:
            out.append(piece[: at - start])  # the token that completed the stop string
            break
        out.append(piece)
        start = end
    return out, stop


def _tool_call(
    tools: list[Any], choice: Any, messages: list[Any], seed: Any
) -> dict[str, Any] | None:
    if choice in (None, "none"):
        return None
    funcs = [t.get("function") or {} for t in tools if isinstance(t, dict)]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = next((fn for fn in funcs if fn.get("name") == name), None)
        if chosen is None:
            raise _value_error(
                "The tool specified in `tool_choice` does not match any of the specified `tools`",
                "tool_choice",
            )
        messages = [*messages, {"role": "user", "content": f"use {name}"}]
        return text.tool_call([{"function": chosen}], messages, seed)
    if choice == "required":
        asked = text.tool_call(tools, messages, seed)
        return asked or text.tool_call(tools[:1], [{"role": "user", "content": "use tool"}], seed)
    return text.tool_call(tools, messages, seed)


def _tool_fits(tool: dict[str, Any], room: int) -> bool:
    args = json.dumps(tool["function"]["arguments"])
    return 1 + len(_pieces(args)) <= room


def _pieces(s: str, size: int = 4) -> list[str]:
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def _plan_tool(call: Call, tool: dict[str, Any], call_id: str) -> None:
    name = tool["function"]["name"]
    args = json.dumps(tool["function"]["arguments"])  # a JSON string, unlike Ollama
    call.tool_calls = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
    ]
    call.content = None
    call.finish_reason = "tool_calls"
    head = {"index": 0, "id": call_id, "type": "function", "function": {"name": name}}
    call.deltas.append({"tool_calls": [head]})
    call.deltas += [
        {"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in _pieces(args)
    ]
