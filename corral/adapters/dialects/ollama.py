"""The Ollama native dialect (/api/chat, /api/generate, /api/embed, /api/embeddings),
as spoken by clients and by Ollama backends.

Client side: ``parse_*`` read requests; ``render_*`` and ``StreamEncoder`` write
answers. Backend side: ``*_body`` write requests (each returns
``Outgoing(body, dropped)``); ``parse_reply``, ``parse_embed_reply`` and
``StreamDecoder`` read answers. Everything is pure: timestamps come in.

(The pass-through path's request structs live in ``corral.adapters.ollama``.)
"""

from __future__ import annotations

from corral.adapters.dialects.common import Outgoing
from corral.adapters.dialects.ollama_body import chat_body, embed_body, generate_body
from corral.adapters.dialects.ollama_parse import parse_chat, parse_embed, parse_generate
from corral.adapters.dialects.ollama_reply import (
    parse_embed_reply,
    parse_reply,
    render_embed_reply,
    render_reply,
)
from corral.adapters.dialects.ollama_stream import StreamDecoder, StreamEncoder

__all__ = [
    "Outgoing",
    "StreamDecoder",
    "StreamEncoder",
    "chat_body",
    "embed_body",
    "generate_body",
    "parse_chat",
    "parse_embed",
    "parse_embed_reply",
    "parse_generate",
    "parse_reply",
    "render_embed_reply",
    "render_reply",
]
