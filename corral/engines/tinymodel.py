"""A tiny random-weight llama model, written as GGUF by our own code.

Tests and the demo need a model that llama.cpp really loads, yet nothing may be
downloaded at run time. This one is ~0.7 MB, loads in milliseconds, and answers
every text endpoint (chat, completions, embeddings, tokenize)::

    path = write_tiny_model(tmp_path / "tiny.gguf", seed=0)
    path = cached_tiny_model()          # written once into the user's cache dir

Its weights are random, so its "answers" are noise; one trick keeps that noise
readable (see ``_output_projection``): every generated token is printable ASCII,
and the end-of-text tokens are never picked, so a generation always runs to
``max_tokens``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

__all__ = [
    "CHAT_TEMPLATE",
    "FORMAT_VERSION",
    "TINY",
    "TinyModelSpec",
    "byte_alphabet",
    "cached_tiny_model",
    "default_cache_dir",
    "tiny_vocab",
    "write_tiny_model",
]

# Bump when the file's content changes, so cached copies of an older layout are not reused.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TinyModelSpec:
    """The model's hyper-parameters (llama architecture)."""

    n_blocks: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 256
    n_ctx: int = 512
    rope_dims: int = 16
    rope_base: float = 10000.0
    rms_eps: float = 1e-5


TINY = TinyModelSpec()

# ChatML, the plainest template llama.cpp's Jinja engine renders for /v1/chat/completions.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A few merged word pieces, each built from two tokens that exist before it, so the BPE
# tokenizer really merges (``Ġ`` is GPT-2's stand-in for a space).
_MERGES: tuple[tuple[str, str], ...] = (
    ("h", "e"),
    ("l", "l"),
    ("he", "ll"),
    ("hell", "o"),
    ("Ġ", "w"),
    ("o", "r"),
    ("Ġw", "or"),
    ("l", "d"),
    ("Ġwor", "ld"),
    ("Ġ", "t"),
    ("Ġt", "he"),
)
_CONTROL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS, EOS = "<|endoftext|>", "<|im_end|>"

# The dimension that carries the constant read by the output projection.
_SIGNAL_DIM = 0
_SIGNAL = 16.0
_WEIGHT_STD = 0.02


def byte_alphabet() -> list[str]:
    """GPT-2's byte→unicode table: entry ``b`` is the one-character token for byte ``b``.

    Printable Latin-1 bytes stand for themselves; the rest are shifted past 255 so
    every byte has a visible, non-whitespace character.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table: dict[int, str] = {b: chr(b) for b in kept}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return [table[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """Tokens (ids 0-255 are the bytes), their GGUF token types, and the merges."""
    tokens = byte_alphabet()
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    for left, right in _MERGES:
        tokens.append(left + right)
        types.append(int(gguf.TokenType.NORMAL))
    tokens.extend(_CONTROL)
    types.extend([int(gguf.TokenType.CONTROL)] * len(_CONTROL))
    merges = [f"{left} {right}" for left, right in _MERGES]
    return tokens, types, merges


def _is_printable(token: str, alphabet_index: dict[str, int]) -> bool:
    """True when every byte the token decodes to is printable ASCII (space to ``~``)."""
    if token in _CONTROL:
        return False
    return all(0x20 <= alphabet_index[ch] <= 0x7E for ch in token)


def _output_projection(
    tokens: list[str], spec: TinyModelSpec, rng: np.random.Generator
) -> np.ndarray:
    """The (vocab, embd) output matrix that makes generations printable.

    Every token embedding carries ``_SIGNAL`` in one dimension, which the random
    blocks barely disturb and the final RMS norm scales to about sqrt(n_embd). Reading
    that dimension with +1 for printable tokens and -1 for the rest (EOS included)
    leaves a logit gap of ~16 that sampling never crosses, while the small random
    rest still varies which printable token comes next.
    """
    index = {ch: b for b, ch in enumerate(byte_alphabet())}
    weights = rng.normal(0.0, _WEIGHT_STD, (len(tokens), spec.n_embd)).astype(np.float32)
    sign = [1.0 if _is_printable(t, index) else -1.0 for t in tokens]
    weights[:, _SIGNAL_DIM] = np.asarray(sign, dtype=np.float32)
    return weights


def _tensors(
    tokens: list[str], spec: TinyModelSpec, rng: np.random.Generator
) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor by its GGUF name; numpy shapes are (out, in), as gguf expects."""
    names = {key: f"{name}.weight" for key, name in gguf.TENSOR_NAMES.items()}
    t = gguf.MODEL_TENSOR
    head_dim = spec.n_embd // spec.n_head

    def rand(*shape: int) -> np.ndarray:
        return rng.normal(0.0, _WEIGHT_STD, shape).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    embeddings = rand(len(tokens), spec.n_embd)
    embeddings[:, _SIGNAL_DIM] = _SIGNAL
    yield names[t.TOKEN_EMBD], embeddings
    for bid in range(spec.n_blocks):
        kv = spec.n_head_kv * head_dim
        for key, value in (
            (t.ATTN_NORM, ones(spec.n_embd)),
            (t.ATTN_Q, rand(spec.n_embd, spec.n_embd)),
            (t.ATTN_K, rand(kv, spec.n_embd)),
            (t.ATTN_V, rand(kv, spec.n_embd)),
            (t.ATTN_OUT, rand(spec.n_embd, spec.n_embd)),
            (t.FFN_NORM, ones(spec.n_embd)),
            (t.FFN_GATE, rand(spec.n_ff, spec.n_embd)),
            (t.FFN_UP, rand(spec.n_ff, spec.n_embd)),
            (t.FFN_DOWN, rand(spec.n_embd, spec.n_ff)),
        ):
            yield names[key].format(bid=bid), value
    yield names[t.OUTPUT_NORM], ones(spec.n_embd)
    yield names[t.OUTPUT], _output_projection(tokens, spec, rng)


def write_tiny_model(path: Path, *, seed: int = 0, spec: TinyModelSpec = TINY) -> Path:
    """Write the tiny model to ``path`` (overwriting it) and return ``path``.

    The same seed gives the same bytes: nothing in the file depends on time or place.
    """
    path = Path(path)
    tokens, types, merges = tiny_vocab()
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "llama")
    try:
        writer.add_name("corral-tiny-llama")
        writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
        writer.add_context_length(spec.n_ctx)
        writer.add_embedding_length(spec.n_embd)
        writer.add_block_count(spec.n_blocks)
        writer.add_feed_forward_length(spec.n_ff)
        writer.add_head_count(spec.n_head)
        writer.add_head_count_kv(spec.n_head_kv)
        writer.add_rope_dimension_count(spec.rope_dims)
        writer.add_rope_freq_base(spec.rope_base)
        writer.add_layer_norm_rms_eps(spec.rms_eps)
        writer.add_vocab_size(len(tokens))
        # MEAN pooling gives /v1/embeddings one vector per input.
        writer.add_pooling_type(gguf.PoolingType.MEAN)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tokens.index(BOS))
        writer.add_eos_token_id(tokens.index(EOS))
        # ChatML prompts carry no BOS; adding one would only shift every token count.
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)
        for name, tensor in _tensors(tokens, spec, rng):
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/corral`` (``~/.cache/corral`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "corral"


def cached_tiny_model(directory: Path | None = None, *, seed: int = 0) -> Path:
    """The tiny model's path in ``directory`` (default: the user's cache dir), written once.

    The file is written under a temporary name and renamed into place, so concurrent
    callers (parallel test workers, a demo and a test) never see half a model.
    """
    directory = Path(directory) if directory is not None else default_cache_dir()
    path = directory / f"corral-tiny-llama-v{FORMAT_VERSION}-seed{seed}.gguf"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tiny-", suffix=".gguf.part")
    os.close(fd)
    try:
        write_tiny_model(Path(tmp), seed=seed)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
