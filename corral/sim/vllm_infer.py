"""vLLM's text endpoints, ``/v1/chat/completions`` and ``/v1/completions``.

Non-streamed answers are one JSON body once the engine is done. Streams are SSE:
``data: {chunk}`` per token, the chat's first chunk carrying the role, the last delta
carrying ``finish_reason``, then, only with ``stream_options.include_usage``, a chunk
with ``choices: []`` and ``usage``, and ``data: [DONE]``. An error after the stream
began is a ``data: {"error": ...}`` event followed by ``[DONE]``, as vLLM's generators
do. A client that disconnects aborts its sequence in the engine.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from corral.sim.model_types import Event, EventKind, Kind, Request
from corral.sim.runtime import Inbox
from corral.sim.streaming import FaultyStream, Framing
from corral.sim.vllm_answer import Call, parse_chat, parse_completion
from corral.sim.vllm_node import VLLM_RUNTIME, VllmRuntime
from corral.sim.vllm_wire import (
    DONE,
    ENGINE_DEAD,
    ApiError,
    decode_json,
    encode,
    error_body,
    json_response,
    sse,
)

__all__ = ["chat_completions", "completions"]


_SSE = Framing(
    "text/event-stream; charset=utf-8",
    b"\n\n",
    sse(error_body(500, ENGINE_DEAD, "InternalServerError")) + DONE,
)


class _Answer:
    """The response objects of one call (ids and timestamps fixed at the start)."""

    def __init__(self, rt: VllmRuntime, call: Call) -> None:
        self.call = call
        self.counts = not rt.faults.no_usage  # the no_usage fault: no usage anywhere
        chat = call.api == "chat"
        self.id = rt.new_id("chatcmpl" if chat else "cmpl")
        self.created = int(rt.created + rt.now())
        self.object = "chat.completion.chunk" if chat else "text_completion"

    def whole(self) -> dict[str, Any]:
        c = self.call
        choice: dict[str, Any]
        if c.api == "chat":
            message: dict[str, Any] = {
                "role": "assistant",
                "content": c.content,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "reasoning": c.reasoning,
            }
            if c.tool_calls:
                message["tool_calls"] = c.tool_calls
            choice = {"index": 0, "message": message, "logprobs": None}
        else:
            choice = {"index": 0, "text": c.content or "", "logprobs": None}
        choice.update(finish_reason=c.finish_reason, stop_reason=c.stop_reason)
        return {
            "id": self.id,
            "object": "chat.completion" if c.api == "chat" else "text_completion",
            "created": self.created,
            "model": c.model,
            "choices": [choice],
            "usage": c.usage() if self.counts else None,
            "system_fingerprint": None,
        }

    def chunk(self, delta: dict[str, Any], sent: int, finish: str | None = None) -> bytes:
        c = self.call
        choice: dict[str, Any] = {"index": 0}
        if c.api == "chat":
            choice["delta"] = delta
        else:
            choice["text"] = delta.get("text", "")
        choice["logprobs"] = None
        choice["finish_reason"] = finish
        if finish is not None:
            choice["stop_reason"] = c.stop_reason
        out: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": c.model,
            "choices": [choice],
        }
        if c.continuous_usage and self.counts:
            out["usage"] = c.usage(sent)
        return sse(out)

    def usage_chunk(self) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": self.object,
                "created": self.created,
                "model": self.call.model,
                "choices": [],
                "usage": self.call.usage(),
            }
        )


async def _infer(request: web.Request, api: str) -> web.StreamResponse:
    rt = request.app[VLLM_RUNTIME]
    rt.counters.requests += 1
    body = decode_json(await request.read())
    parse = parse_chat if api == "chat" else parse_completion
    call = parse(body, rt.served, rt.spec, rt.vocab, rt.model.max_model_len)
    refusal = rt.refusal()
    if refusal is not None:
        raise refusal
    req = Request(
        rt.next_id(),
        rt.spec.name,
        Kind.CHAT if api == "chat" else Kind.GENERATE,
        prompt_tokens=call.prompt_tokens,
        output_tokens=call.output_tokens,
        done_reason=call.finish_reason,
        prompt_ids=tuple(call.prompt_ids),
    )
    return await _serve(request, rt, call, req)


async def _serve(
    request: web.Request, rt: VllmRuntime, call: Call, req: Request
) -> web.StreamResponse:
    inbox = rt.submit(req)
    answer = _Answer(rt, call)
    stream = FaultyStream(request, rt, _SSE)
    return await stream.guard(req.req_id, _respond(rt, call, inbox, answer, stream))


async def _respond(
    rt: VllmRuntime, call: Call, inbox: Inbox, answer: _Answer, stream: FaultyStream
) -> web.StreamResponse:
    if not call.stream:
        await inbox.done()
        stream.finished = True
        body = stream.whole(encode(answer.whole()))
        if body is None:
            raise ApiError(500, ENGINE_DEAD, "InternalServerError")
        rt.counters.completed += 1
        return json_response(body)
    # Headers go out at once (Starlette's StreamingResponse); the body waits for tokens.
    await stream.put([])
    sent = 0
    first = call.api == "chat"
    while True:
        events = await inbox.get()
        done = next((e for e in events if e.kind is EventKind.DONE), None)
        upto = call.output_tokens if done else max(_tokens(events), sent)
        upto = min(upto, call.output_tokens)
        last = upto - 1 if done is not None else -1
        out = [
            answer.chunk(call.deltas[i], i + 1, call.finish_reason if i == last else None)
            for i in range(sent, upto)
        ]
        if first and (out or done is not None):
            # vLLM sends the role with the engine's first output.
            out.insert(0, answer.chunk({"role": "assistant", "content": ""}, 0))
            first = False
        sent = upto
        if done is None:
            await stream.put(out)
            continue
        if not call.deltas:
            empty: dict[str, Any] = {"content": ""} if call.api == "chat" else {"text": ""}
            out.append(answer.chunk(empty, 0, call.finish_reason))
        if call.include_usage and answer.counts:
            out.append(answer.usage_chunk())
        out.append(DONE)
        return await stream.finish(out)


def _tokens(events: list[Event]) -> int:
    return max((e.tokens for e in events if e.kind is not EventKind.PREEMPTED), default=0)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _infer(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _infer(request, "completion")
