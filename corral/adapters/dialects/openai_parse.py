"""Read OpenAI-dialect client requests (/v1/chat/completions, /v1/completions,
/v1/embeddings) into canonical requests, with 400s that name the field.

Unknown fields are ignored, as OpenAI-compatible servers do. Fields with no
canonical home (logprobs, user, logit_bias, ...) are ignored here too; what the
canonical request carries, a writer either sends or reports as dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from corral.adapters.dialects.common import (
    decode_body,
    object_to_args,
    split_image_url,
    think_from_effort,
)
from corral.core.canonical import (
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    Message,
    Sampling,
    ToolCall,
)
from corral.core.errors import InvalidField

__all__ = ["parse_chat", "parse_completion", "parse_embed"]

Positive = Annotated[int, msgspec.Meta(ge=1)]


class _Base(msgspec.Struct, kw_only=True):
    pass


class _ImageURL(_Base):
    url: str
    detail: str | None = None


class _TextPart(_Base, tag="text", tag_field="type"):
    text: str


class _ImagePart(_Base, tag="image_url", tag_field="type"):
    # Ollama's OpenAI layer also takes the URL as a bare string.
    image_url: _ImageURL | str


class _Function(_Base):
    name: str
    # JSON text per the spec; some clients send the object itself.
    arguments: str | dict[str, Any] = "{}"


class _ToolCall(_Base):
    function: _Function
    id: str | None = None
    type: str = "function"


class _Message(_Base):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart | _ImagePart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[_ToolCall] | None = None
    # Earlier assistant turns replayed with their reasoning (llama.cpp, vLLM, Ollama).
    reasoning_content: str | None = None
    reasoning: str | None = None


class _StreamOptions(_Base):
    include_usage: bool = False


class _JsonSchema(_Base):
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class _ResponseFormat(_Base):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


class _Reasoning(_Base):
    effort: str | None = None


class _Sampled(_Base):
    model: str
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: Positive = 1
    max_tokens: Positive | None = None
    max_completion_tokens: Positive | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: _ResponseFormat | None = None
    # vLLM and llama.cpp extensions that Ollama also understands.
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    repeat_penalty: float | None = None


class _ChatBody(_Sampled, kw_only=True):
    messages: list[_Message]
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    reasoning_effort: str | None = None
    reasoning: _Reasoning | None = None


class _CompletionBody(_Sampled, kw_only=True):
    # Token arrays and batches are refused below, naming the field.
    prompt: str | list[Any]
    suffix: str | None = None


class _EmbedBody(_Base):
    model: str
    input: str | list[Any]
    dimensions: Positive | None = None
    encoding_format: Literal["float", "base64"] = "float"


_chat = msgspec.json.Decoder(_ChatBody)
_completion = msgspec.json.Decoder(_CompletionBody)
_embed = msgspec.json.Decoder(_EmbedBody)


def _model(name: str) -> str:
    if not name:
        raise InvalidField("model is required", param="model")
    return name


def _sampling(b: _Sampled) -> Sampling:
    stop = [b.stop] if isinstance(b.stop, str) else b.stop
    extra: dict[str, Any] = {} if b.min_p is None else {"min_p": b.min_p}
    return Sampling(
        temperature=b.temperature,
        top_p=b.top_p,
        top_k=b.top_k,
        seed=b.seed,
        stop=stop,
        # vLLM reads max_completion_tokens first, as the newer name.
        max_tokens=b.max_completion_tokens if b.max_completion_tokens is not None else b.max_tokens,
        presence_penalty=b.presence_penalty,
        frequency_penalty=b.frequency_penalty,
        repeat_penalty=b.repeat_penalty if b.repetition_penalty is None else b.repetition_penalty,
        extra=extra,
    )


def _format(rf: _ResponseFormat | None) -> str | dict[str, Any] | None:
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return "json"
    if rf.json_schema is None or rf.json_schema.schema is None:
        param = "response_format.json_schema.schema"
        raise InvalidField(f"{param} is required for a json_schema response format", param=param)
    return rf.json_schema.schema


def _content(i: int, m: _Message, msg: Message) -> None:
    if m.content is None:
        # Only an assistant turn may omit content (it called tools, or said nothing).
        if m.role != "assistant":
            param = f"messages[{i}].content"
            raise InvalidField(f"{param} is required", param=param)
        return
    if isinstance(m.content, str):
        msg.content = m.content
        return
    texts = []
    for j, part in enumerate(m.content):
        if isinstance(part, _TextPart):
            texts.append(part.text)
            continue
        url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
        b64, http = split_image_url(url, param=f"messages[{i}].content[{j}].image_url")
        if b64 is not None:
            msg.images.append(b64)
        elif http is not None:
            msg.image_urls.append(http)
    # Ollama takes one string per message; vLLM also joins text parts with newlines.
    msg.content = "\n".join(texts)


def _message(i: int, m: _Message) -> Message:
    msg = Message(role="system" if m.role == "developer" else m.role)
    _content(i, m, msg)
    if m.role == "tool":
        msg.tool_call_id = m.tool_call_id
        msg.tool_name = m.name
    thinking = m.reasoning_content or m.reasoning
    if thinking:
        msg.thinking = thinking
    for j, tc in enumerate(m.tool_calls or ()):
        args = tc.function.arguments
        text = args if isinstance(args, str) else object_to_args(args)
        msg.tool_calls.append(ToolCall(name=tc.function.name, arguments=text, id=tc.id, index=j))
    return msg


def parse_chat(body: bytes) -> ChatRequest:
    """An OpenAI /v1/chat/completions body as a canonical ChatRequest."""
    b = decode_body(_chat, body)
    if not b.messages:
        raise InvalidField("messages must not be empty", param="messages")
    think: bool | str | None = None
    if b.reasoning is not None and b.reasoning.effort is not None:
        think = think_from_effort(b.reasoning.effort, param="reasoning.effort")
    elif b.reasoning_effort is not None:
        think = think_from_effort(b.reasoning_effort, param="reasoning_effort")
    return ChatRequest(
        model=_model(b.model),
        messages=[_message(i, m) for i, m in enumerate(b.messages)],
        stream=b.stream,
        include_usage=b.stream and b.stream_options is not None and b.stream_options.include_usage,
        tools=b.tools,
        tool_choice=b.tool_choice,
        format=_format(b.response_format),
        think=think,
        sampling=_sampling(b),
        n=b.n,
    )


def _single_string(value: str | list[Any], param: str, what: str) -> str:
    if isinstance(value, str):
        return value
    if len(value) == 1 and isinstance(value[0], str):
        return value[0]
    message = f"{param} must be {what}; token arrays and batches are not supported"
    raise InvalidField(message, param=param)


def parse_completion(body: bytes) -> CompletionRequest:
    """An OpenAI /v1/completions body as a canonical CompletionRequest.

    OpenAI completions continue the prompt as written, so ``raw`` is set — except
    with a suffix, where Ollama needs the model's fill-in-the-middle template.
    """
    b = decode_body(_completion, body)
    return CompletionRequest(
        model=_model(b.model),
        prompt=_single_string(b.prompt, "prompt", "a string (or a list of one string)"),
        stream=b.stream,
        include_usage=b.stream and b.stream_options is not None and b.stream_options.include_usage,
        suffix=b.suffix,
        raw=b.suffix is None,
        format=_format(b.response_format),
        sampling=_sampling(b),
        n=b.n,
    )


def parse_embed(body: bytes) -> EmbedRequest:
    """An OpenAI /v1/embeddings body as a canonical EmbedRequest."""
    b = decode_body(_embed, body)
    single = isinstance(b.input, str)
    inputs = [b.input] if isinstance(b.input, str) else b.input
    if not inputs or not all(isinstance(s, str) for s in inputs):
        raise InvalidField(
            "input must be a string or a non-empty list of strings; token arrays are not supported",
            param="input",
        )
    return EmbedRequest(
        model=_model(b.model),
        inputs=inputs,
        single=single,
        dimensions=b.dimensions,
        encoding_format=b.encoding_format,
    )
