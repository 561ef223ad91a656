"""What a simulated vLLM server knows about the model it serves.

vLLM serves Hugging Face checkpoints (``Qwen/Qwen2.5-7B-Instruct``) in 16-bit weights on
datacenter GPUs, so the speeds differ from the GGUF numbers of Ollama's catalogue: a
spec is guessed from the name's parameter count (``-7B-``, ``-0.5B``) for bf16 weights
on a ~2 TB/s, ~400 TFLOPS GPU. The name keeps its case: vLLM matches model names
exactly. A catalogue entry under the lower-cased name (``--catalogue``) wins.
"""

from __future__ import annotations

import re
from dataclasses import replace

from corral.sim.catalogue import Catalogue, ModelSpec, guess_spec, normalize_name

__all__ = ["is_reasoning_model", "served_spec"]

_EMBED_RE = re.compile(r"embed|(^|/)(bge|gte|e5)-", re.IGNORECASE)
_REASONING_RE = re.compile(r"qwen3|qwq|deepseek-r1|-r1-|reason|think", re.IGNORECASE)


def is_reasoning_model(name: str) -> bool:
    """Names of models that think first (vLLM started with a reasoning parser)."""
    return bool(_REASONING_RE.search(name)) and not _EMBED_RE.search(name)


def served_spec(name: str, catalogue: Catalogue | None = None) -> ModelSpec:
    """The spec of the model ``name`` as a vLLM server would serve it."""
    key = normalize_name(name)
    if catalogue is not None and key in catalogue:
        return replace(catalogue.get(key), name=name)
    embedding = bool(_EMBED_RE.search(name))
    guessed = guess_spec(key, embedding=embedding, quantization_level="BF16")
    billions = max(guessed.params, 0.01)
    size = int(billions * 2e9)
    # Decoding reads every weight once per step: ~2 TB/s of HBM bandwidth. Prefill is
    # compute-bound: 2 FLOPs per parameter and token at ~400 TFLOPS.
    gen_tps = min(400.0, 2.0e12 / size)
    prompt_tps = min(60000.0, 4.0e14 / (2 * billions * 1e9))
    caps = ["embedding"] if embedding else ["completion", "tools"]
    if is_reasoning_model(name):
        caps.append("thinking")
    return replace(
        guessed,
        name=name,
        size_bytes=size,
        vram_bytes=size,
        gen_tps=gen_tps,
        prompt_tps=prompt_tps,
        context_length=8192 if embedding else _context_length(name),
        capabilities=tuple(caps),
        format="safetensors",
    )


def _context_length(name: str) -> int:
    lower = name.lower()
    if "llama-3.1" in lower or "llama-3.2" in lower or "llama-3.3" in lower:
        return 131072
    if "qwen3" in lower:
        return 40960
    return 32768
