"""Why an answer stopped, in each dialect: the one place the two vocabularies meet.

Canonical reasons are OpenAI's (stop, length, tool_calls, content_filter) plus
Ollama's load/unload, which only the Ollama dialect can say.

=============  ==============================  =====================================
canonical      OpenAI finish_reason            Ollama done_reason
=============  ==============================  =====================================
stop           stop                            stop
length         length                          length
tool_calls     tool_calls                      stop (with message.tool_calls set)
content_filter content_filter                  stop
load / unload  stop                            load / unload
=============  ==============================  =====================================
"""

from __future__ import annotations

__all__ = ["from_ollama", "from_openai", "to_ollama", "to_openai"]

_FROM_OPENAI = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the deprecated single-function form
    "content_filter": "content_filter",
}
_TO_OPENAI = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "load": "stop",
    "unload": "stop",
}
_FROM_OLLAMA = {"stop": "stop", "length": "length", "load": "load", "unload": "unload"}
_TO_OLLAMA = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "stop",
    "content_filter": "stop",
    "load": "load",
    "unload": "unload",
}


def from_openai(reason: str | None) -> str | None:
    # vLLM can say "abort" or a stop string's reason; anything unknown ended normally.
    return None if reason is None else _FROM_OPENAI.get(reason, "stop")


def to_openai(reason: str | None, *, tool_calls: bool = False) -> str | None:
    if reason is None:
        return None
    mapped = _TO_OPENAI.get(reason, "stop")
    # Ollama says "stop" when it called tools; OpenAI clients look for "tool_calls".
    return "tool_calls" if tool_calls and mapped == "stop" else mapped


def from_ollama(reason: str | None, *, tool_calls: bool = False) -> str:
    mapped = _FROM_OLLAMA.get(reason or "stop", "stop")
    return "tool_calls" if tool_calls and mapped == "stop" else mapped


def to_ollama(reason: str | None) -> str:
    return _TO_OLLAMA.get(reason or "stop", "stop")
