"""Model specs: the built-in catalogue, YAML overrides, and guesses for any name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from corral.sim.catalogue import Catalogue, guess_spec, normalize_name

CAT = Catalogue.builtin()


def test_no_tag_means_latest() -> None:
    assert normalize_name("llama3.2") == "llama3.2:latest"
    assert normalize_name(" Qwen2.5:7B ") == "qwen2.5:7b"
    assert normalize_name("library/foo") == "library/foo:latest"


def test_builtin_catalogue_knows_common_models() -> None:
    for name in ("llama3.2:1b", "qwen2.5:0.5b", "qwen2.5:14b", "mistral:7b", "gemma3:4b"):
        assert name in CAT
    llama = CAT.get("llama3.2:1b")
    assert (llama.family, llama.parameter_size, llama.quantization_level) == (
        "llama",
        "1.2B",
        "Q8_0",
    )
    assert llama.vram_bytes > llama.size_bytes and llama.context_length == 131072
    assert CAT.get("llama3.2").name == "llama3.2:latest"
    assert CAT.get("llama3.2").size_bytes == CAT.get("llama3.2:3b").size_bytes
    embed = CAT.get("nomic-embed-text")
    assert embed.embedding and embed.embedding_length == 768
    assert embed.capabilities == ("embedding",)


def test_bigger_models_are_slower_and_larger() -> None:
    small, big = CAT.get("qwen2.5:0.5b"), CAT.get("qwen2.5:14b")
    assert big.size_bytes > small.size_bytes and big.vram_bytes > small.vram_bytes
    assert big.gen_tps < small.gen_tps and big.prompt_tps < small.prompt_tps


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("foo:7b", 7.0),
        ("foo:0.5b", 0.5),
        ("codellama-13b", 13.0),
        ("big:70b", 70.0),
        ("mixtral:8x7b", 56.0),
        ("smol:135m", 0.135),
        ("bar:7b-instruct-q8_0", 7.0),
    ],
)
def test_unknown_names_get_sizes_guessed_from_the_tag(name: str, billions: float) -> None:
    spec = CAT.get(name)
    assert spec.params == pytest.approx(billions, rel=0.01)
    assert spec.size_bytes == pytest.approx(
        billions * 1e9 * (1.07 if "q8" in name else 0.61), rel=0.05
    )


def test_unknown_names_without_size_are_small_and_embed_names_embed() -> None:
    plain = CAT.get("mystery")
    assert plain.params == 1.0 and not plain.embedding and plain.name == "mystery:latest"
    embed = CAT.get("acme-embed-v2")
    assert embed.embedding and embed.capabilities == ("embedding",) and embed.embedding_length
    assert CAT.get("q:8b-q8_0").quantization_level == "Q8_0"


def test_digest_is_the_sha256_of_the_name() -> None:
    assert CAT.get("foo:7b").digest == hashlib.sha256(b"foo:7b").hexdigest()
    assert guess_spec("foo:7b") == guess_spec("foo:7b")


def test_yaml_file_adds_and_overrides_specs(tmp_path: Path) -> None:
    path = tmp_path / "cat.yaml"
    path.write_text(
        "models:\n"
        "  llama3.2:1b: {gen_tps: 5, context_length: 8192}\n"
        "  house-model:12b: {family: house, quantization_level: Q5_K_M}\n"
        "  house: {alias: house-model:12b}\n"
    )
    cat = Catalogue.load(path)
    assert cat.get("llama3.2:1b").gen_tps == 5 and cat.get("llama3.2:1b").context_length == 8192
    house = cat.get("house-model:12b")
    assert house.family == "house" and house.quantization_level == "Q5_K_M" and house.params == 12
    assert cat.get("house").name == "house:latest" and cat.get("house").family == "house"
    assert cat.get("qwen2.5:7b") == CAT.get("qwen2.5:7b")


def test_yaml_list_form_and_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "cat.yaml"
    path.write_text("models:\n  - name: x:3b\n    gen_tps: 9\n")
    assert Catalogue.load(path).get("x:3b").gen_tps == 9
    path.write_text("models:\n  x:3b: {speed: 9}\n")
    with pytest.raises(ValueError, match="unknown fields"):
        Catalogue.load(path)
