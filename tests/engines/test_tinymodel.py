"""The tiny GGUF model: deterministic bytes, the promised shape, a write-once cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf

from corral.engines.tinymodel import (
    CHAT_TEMPLATE,
    TINY,
    byte_alphabet,
    cached_tiny_model,
    tiny_vocab,
    write_tiny_model,
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf", seed=7)
    b = write_tiny_model(tmp_path / "b.gguf", seed=7)
    c = write_tiny_model(tmp_path / "c.gguf", seed=8)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_the_model_is_well_under_a_megabyte(tiny_model: Path) -> None:
    assert 500_000 < tiny_model.stat().st_size < 1_000_000


def test_metadata_describes_a_small_llama_with_mean_pooling(tiny_model: Path) -> None:
    fields = {name: f.contents() for name, f in gguf.GGUFReader(tiny_model).fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == TINY.n_blocks == 2
    assert fields["llama.embedding_length"] == 64
    assert fields["llama.attention.head_count"] == fields["llama.attention.head_count_kv"] == 4
    assert fields["llama.feed_forward_length"] == 256
    assert fields["llama.context_length"] == 512
    assert fields["llama.rope.dimension_count"] == 16
    assert fields["llama.pooling_type"] == int(gguf.PoolingType.MEAN)
    assert fields["general.file_type"] == int(gguf.LlamaFileType.ALL_F32)
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == CHAT_TEMPLATE
    tokens = fields["tokenizer.ggml.tokens"]
    assert tokens[fields["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    assert tokens[fields["tokenizer.ggml.bos_token_id"]] == "<|endoftext|>"


def test_every_tensor_is_f32_and_shaped_for_llama(tiny_model: Path) -> None:
    tensors = {t.name: t for t in gguf.GGUFReader(tiny_model).tensors}
    assert len(tensors) == 3 + 9 * TINY.n_blocks
    assert {t.tensor_type for t in tensors.values()} == {gguf.GGMLQuantizationType.F32}
    # GGUF lists dimensions innermost first: (in, out).
    assert list(tensors["token_embd.weight"].shape) == [64, 270]
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [256, 64]
    assert list(tensors["output.weight"].shape) == [64, 270]


def test_the_vocab_is_bytes_then_merges_then_control_tokens() -> None:
    tokens, types, merges = tiny_vocab()
    alphabet = byte_alphabet()
    assert tokens[:256] == alphabet
    assert len(set(alphabet)) == 256
    assert alphabet[ord("a")] == "a"
    assert alphabet[ord(" ")] == "Ġ"  # GPT-2's stand-in for a space
    assert alphabet[ord("\n")] == "Ċ"
    assert tokens[-3:] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert types[-3:] == [int(gguf.TokenType.CONTROL)] * 3
    for merge in merges:  # every merge joins two known tokens into a known token
        left, right = merge.split(" ")
        assert {left, right, left + right} <= set(tokens)


def test_the_cache_writes_once_and_reuses_the_file(tmp_path: Path) -> None:
    first = cached_tiny_model(tmp_path)
    stamp = first.stat().st_mtime_ns
    again = cached_tiny_model(tmp_path)
    assert again == first
    assert again.stat().st_mtime_ns == stamp
    assert cached_tiny_model(tmp_path, seed=1) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.name, cached_tiny_model(tmp_path, seed=1).name]
    )  # no temporary file left behind
