"""Moves between canonical shapes that the dialects need but neither owns."""

from __future__ import annotations

from corral.core.canonical import ChatRequest, CompletionRequest, Message

__all__ = ["completion_as_chat"]


def completion_as_chat(req: CompletionRequest) -> ChatRequest:
    """An Ollama generate that is not ``raw`` as a one-turn chat.

    Ollama wraps such a prompt (and ``system``) in the model's chat template;
    /v1/completions would not, so the faithful route to an OpenAI-kind backend is
    /v1/chat/completions. The answer comes back as a Reply or Deltas like any
    chat, and renders as a generate answer (``kind="completion"``).
    """
    messages = []
    if req.system:
        messages.append(Message(role="system", content=req.system))
    messages.append(Message(role="user", content=req.prompt, images=list(req.images)))
    return ChatRequest(
        model=req.model,
        messages=messages,
        stream=req.stream,
        include_usage=req.include_usage,
        format=req.format,
        think=req.think,
        sampling=req.sampling,
        keep_alive=req.keep_alive,
        n=req.n,
    )
