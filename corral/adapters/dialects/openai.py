"""The OpenAI dialect (/v1/chat/completions, /v1/completions, /v1/embeddings), as
spoken by clients and by OpenAI-kind backends (vLLM, llama.cpp).

Client side: ``parse_*`` read requests; ``render_*`` and ``StreamEncoder`` write
answers. Backend side: ``*_body`` write requests (each returns
``Outgoing(body, dropped)``); ``parse_reply``, ``parse_embed_reply`` and
``StreamDecoder`` read answers. Everything is pure: ids and timestamps come in.
"""

from __future__ import annotations

from corral.adapters.dialects.common import Outgoing
from corral.adapters.dialects.openai_body import chat_body, completion_body, embed_body
from corral.adapters.dialects.openai_parse import parse_chat, parse_completion, parse_embed
from corral.adapters.dialects.openai_reply import (
    parse_embed_reply,
    parse_reply,
    render_embed_reply,
    render_reply,
)
from corral.adapters.dialects.openai_stream import StreamDecoder, StreamEncoder

__all__ = [
    "Outgoing",
    "StreamDecoder",
    "StreamEncoder",
    "chat_body",
    "completion_body",
    "embed_body",
    "parse_chat",
    "parse_completion",
    "parse_embed",
    "parse_embed_reply",
    "parse_reply",
    "render_embed_reply",
    "render_reply",
]
