"""Dialect translators: Ollama ⇄ canonical ⇄ OpenAI.

Each dialect module (``openai``, ``ollama``) reads its requests and answers into
the canonical types of ``corral.core.canonical`` and writes them back out, so a
translation is always dialect → canonical → dialect. Shared pieces: ``common``
(decoding with field-named 400s, ids, images, the ``Outgoing`` pair), ``reasons``
(finish/done reasons, in one table) and ``convert`` (canonical reshaping).

Writers for a backend return ``Outgoing(body, dropped)``, where ``dropped`` lists
the client's fields the backend's dialect cannot express; the gateway logs them.
"""

from __future__ import annotations

from corral.adapters.dialects import ollama, openai
from corral.adapters.dialects.common import Outgoing

__all__ = ["Outgoing", "ollama", "openai"]
