"""One canonical shape for requests and answers, between the Ollama and OpenAI dialects.

Translation always goes dialect → canonical → dialect, so each dialect needs one
reader and one writer for each direction, not one converter per pair. Fields carry
the union of what both dialects can say; a writer drops (and reports) what its
dialect cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "Delta",
    "EmbedReply",
    "EmbedRequest",
    "Message",
    "Reply",
    "Sampling",
    "Timings",
    "ToolCall",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "load", "unload"]


@dataclass(slots=True)
class ToolCall:
    """A function call. ``arguments`` is JSON text (OpenAI's form); Ollama's object
    form is parsed from and serialized to it at the dialect edge."""

    name: str
    arguments: str = "{}"
    id: str | None = None
    index: int = 0


@dataclass(slots=True)
class Message:
    role: str
    content: str = ""
    images: list[str] = field(default_factory=list)  # base64, no data: prefix
    image_urls: list[str] = field(default_factory=list)  # http(s) URLs still to fetch
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    tool_name: str | None = None
    thinking: str | None = None


@dataclass(slots=True)
class Sampling:
    """Generation options both dialects share, plus Ollama-only ``options`` passed on."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    max_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    num_ctx: int | None = None
    # Ollama options with no OpenAI counterpart (num_batch, mirostat, ...).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    format: str | dict[str, Any] | None = None  # "json" or a JSON schema
    think: bool | str | None = None  # Ollama think / OpenAI reasoning_effort
    sampling: Sampling = field(default_factory=Sampling)
    keep_alive: str | int | float | None = None
    n: int = 1


@dataclass(slots=True)
class CompletionRequest:
    model: str
    prompt: str
    stream: bool = False
    include_usage: bool = False
    suffix: str | None = None
    system: str | None = None
    raw: bool = False
    images: list[str] = field(default_factory=list)
    # Ollama-only: a prompt template override and the token context of an earlier
    # answer. Kept so a writer for another dialect can report them as dropped.
    template: str | None = None
    context: list[int] | None = None
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    keep_alive: str | int | float | None = None
    n: int = 1


@dataclass(slots=True)
class EmbedRequest:
    model: str
    inputs: list[str]
    single: bool = False  # the client sent one string, not a list
    dimensions: int | None = None
    truncate: bool | None = None
    keep_alive: str | int | float | None = None
    encoding_format: str = "float"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # counted by Corral, not reported by the backend

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Timings:
    """Durations in nanoseconds, as Ollama reports them; None where unknown."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_duration: int | None = None
    eval_duration: int | None = None


@dataclass(slots=True)
class Delta:
    """One piece of a streamed answer."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    timings: Timings | None = None


@dataclass(slots=True)
class Reply:
    """A whole (non-streamed) chat or completion answer."""

    model: str
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    created: int = 0
    timings: Timings | None = None


@dataclass(slots=True)
class EmbedReply:
    model: str
    embeddings: list[list[float]]
    prompt_tokens: int | None = None
