"""Logical models: aliases, per-backend upstream names, and unmapped models."""

from __future__ import annotations

from typing import Any

import pytest

from corral.core.models import BackendModel, LogicalModel, ModelMap
from corral.core.names import normalize_model

QWEN = LogicalModel(
    "qwen2.5:7b",
    aliases=("qwen", "Qwen/Qwen2.5-7B-Instruct"),
    upstreams={"gpu1": "qwen2.5:7b", "vllm-a": "Qwen/Qwen2.5-7B-Instruct"},
)


def ollama(*names: str) -> dict[str, dict[str, Any]]:
    """What the fleet keeps from an Ollama /api/tags answer."""
    return {normalize_model(n): {"name": n, "model": n, "size": 1} for n in names}


def openai(*ids: str) -> dict[str, dict[str, Any]]:
    """What the fleet keeps from an OpenAI-kind /v1/models answer."""
    return {normalize_model(i): {"id": i, "object": "model"} for i in ids}


def upstreams(placed: dict[str, BackendModel]) -> dict[str, str]:
    return {key: p.upstream for key, p in placed.items()}


# --- resolving what clients ask for ------------------------------------------------


@pytest.mark.parametrize("asked", ["qwen2.5:7b", "qwen", "Qwen/Qwen2.5-7B-Instruct"])
def test_name_and_every_alias_resolve_to_the_logical_key(asked: str) -> None:
    assert ModelMap([QWEN]).resolve(asked) == "qwen2.5:7b"


@pytest.mark.parametrize("asked", ["qwen:latest", " qwen ", "Qwen/Qwen2.5-7B-Instruct:latest"])
def test_aliases_match_with_or_without_latest(asked: str) -> None:
    assert ModelMap([QWEN]).resolve(asked) == "qwen2.5:7b"


def test_a_bare_logical_name_is_keyed_and_asked_for_as_latest() -> None:
    models = ModelMap([LogicalModel("llama3", aliases=("meta/llama-3:latest",))])
    assert models.models[0].key == "llama3:latest"
    assert models.resolve("llama3") == models.resolve("llama3:latest") == "llama3:latest"
    assert models.resolve("meta/llama-3") == "llama3:latest"


def test_an_unknown_name_resolves_to_itself_normalized() -> None:
    models = ModelMap([QWEN])
    assert models.resolve("mistral") == "mistral:latest"
    assert models.resolve("qwen:14b") == "qwen:14b"  # a different tag is a different model


def test_without_logical_models_names_are_only_normalized() -> None:
    models = ModelMap()
    assert models.resolve("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct:latest"
    assert upstreams(models.backend_models("gpu1", ollama("a:1b", "b"))) == {
        "a:1b": "a:1b",
        "b:latest": "b",
    }


# --- filing what backends report ---------------------------------------------------


def test_each_backend_hears_its_own_name_for_the_logical_model() -> None:
    models = ModelMap([QWEN])
    on_ollama = models.backend_models("gpu1", ollama("qwen2.5:7b"))
    on_vllm = models.backend_models("vllm-a", openai("Qwen/Qwen2.5-7B-Instruct"))
    assert upstreams(on_ollama) == {"qwen2.5:7b": "qwen2.5:7b"}
    assert upstreams(on_vllm) == {"qwen2.5:7b": "Qwen/Qwen2.5-7B-Instruct"}
    assert on_vllm["qwen2.5:7b"] == BackendModel(
        upstream="Qwen/Qwen2.5-7B-Instruct",
        source="Qwen/Qwen2.5-7B-Instruct:latest",
        mapped=True,
    )


def test_a_configured_upstream_name_joins_though_it_is_no_alias() -> None:
    awq = LogicalModel("qwen-awq", upstreams={"vllm-b": "Qwen/Qwen2.5-7B-Instruct-AWQ"})
    placed = ModelMap([awq]).backend_models("vllm-b", openai("Qwen/Qwen2.5-7B-Instruct-AWQ"))
    assert upstreams(placed) == {"qwen-awq:latest": "Qwen/Qwen2.5-7B-Instruct-AWQ"}


def test_a_configured_upstream_name_binds_only_on_its_backend() -> None:
    awq = LogicalModel("qwen-awq", upstreams={"vllm-b": "Qwen/Qwen2.5-7B-Instruct-AWQ"})
    placed = ModelMap([awq]).backend_models("vllm-c", openai("Qwen/Qwen2.5-7B-Instruct-AWQ"))
    # On another engine the same id may be another model; only names and aliases travel.
    assert placed["Qwen/Qwen2.5-7B-Instruct-AWQ:latest"].mapped is False


def test_the_configured_upstream_name_wins_over_another_models_name() -> None:
    small = LogicalModel("small")
    big = LogicalModel("big", upstreams={"gpu1": "small"})
    models = ModelMap([small, big])
    assert upstreams(models.backend_models("gpu1", ollama("small"))) == {"big:latest": "small"}
    assert upstreams(models.backend_models("gpu2", ollama("small"))) == {"small:latest": "small"}


def test_upstream_names_match_with_or_without_latest() -> None:
    model = LogicalModel("tiny", upstreams={"gpu1": "tinyllama", "vllm-a": "org/tiny:latest"})
    models = ModelMap([model])
    assert upstreams(models.backend_models("gpu1", ollama("tinyllama:latest"))) == {
        "tiny:latest": "tinyllama:latest"
    }
    assert upstreams(models.backend_models("vllm-a", openai("org/tiny"))) == {
        "tiny:latest": "org/tiny"
    }


@pytest.mark.parametrize("backend", ["gpu2", "gpu7", "vllm-z"])
def test_a_backend_reporting_the_name_or_an_alias_joins_without_being_listed(
    backend: str,
) -> None:
    models = ModelMap([QWEN])
    assert upstreams(models.backend_models(backend, ollama("qwen2.5:7b"))) == {
        "qwen2.5:7b": "qwen2.5:7b"
    }
    assert upstreams(models.backend_models(backend, openai("Qwen/Qwen2.5-7B-Instruct"))) == {
        "qwen2.5:7b": "Qwen/Qwen2.5-7B-Instruct"
    }
    assert upstreams(models.backend_models(backend, ollama("qwen:latest"))) == {
        "qwen2.5:7b": "qwen:latest"
    }


def test_when_two_reported_names_join_one_model_the_configured_one_is_used() -> None:
    reported = ollama("qwen", "qwen2.5:7b")
    assert upstreams(ModelMap([QWEN]).backend_models("gpu1", reported)) == {
        "qwen2.5:7b": "qwen2.5:7b"
    }
    elsewhere = LogicalModel(QWEN.name, QWEN.aliases, {"gpu1": "qwen"})
    assert upstreams(ModelMap([elsewhere]).backend_models("gpu1", reported)) == {
        "qwen2.5:7b": "qwen"
    }


def test_when_only_aliases_join_the_first_alias_is_used() -> None:
    reported = ollama("Qwen/Qwen2.5-7B-Instruct", "qwen")
    assert upstreams(ModelMap([QWEN]).backend_models("gpu9", dict(reversed(reported.items())))) == {
        "qwen2.5:7b": "qwen"
    }


def test_unmapped_models_keep_their_own_key_and_are_marked() -> None:
    placed = ModelMap([QWEN]).backend_models("gpu1", ollama("qwen2.5:7b", "mistral"))
    assert placed["mistral:latest"] == BackendModel("mistral", "mistral:latest", mapped=False)
    assert placed["qwen2.5:7b"].mapped is True


def test_the_source_key_finds_the_backends_entry() -> None:
    reported = openai("Qwen/Qwen2.5-7B-Instruct", "other")
    placed = ModelMap([QWEN]).backend_models("vllm-a", reported)
    rekeyed = {key: reported[p.source] for key, p in placed.items()}
    assert rekeyed == {
        "qwen2.5:7b": {"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model"},
        "other:latest": {"id": "other", "object": "model"},
    }


def test_an_entry_without_a_name_is_sent_by_its_key() -> None:
    placed = ModelMap().backend_models("gpu1", {"odd:latest": {"size": 3}})
    assert placed["odd:latest"].upstream == "odd:latest"


# --- listing -----------------------------------------------------------------------------


def test_logical_models_are_listed_under_their_configured_name() -> None:
    models = ModelMap([QWEN, LogicalModel("llama3")], list_unmapped=False)
    assert models.listed("qwen2.5:7b") and models.listed("llama3:latest")
    hit = models.model("llama3:latest")
    assert hit is not None and hit.name == "llama3"
    assert models.model("qwen2.5:7b") is QWEN


def test_unmapped_models_are_listed_by_default() -> None:
    models = ModelMap([QWEN])
    assert models.listed("mistral:latest")
    assert models.model("mistral:latest") is None


def test_list_unmapped_false_hides_unmapped_models_but_they_still_resolve() -> None:
    models = ModelMap([QWEN], list_unmapped=False)
    placed = models.backend_models("gpu1", ollama("qwen2.5:7b", "mistral"))
    assert [key for key in placed if models.listed(key)] == ["qwen2.5:7b"]
    assert models.resolve("mistral") == "mistral:latest" and "mistral:latest" in placed


# --- conflicts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("models", "why"),
    [
        ([LogicalModel("a"), LogicalModel("a:latest")], "'a:latest' names both 'a' and 'a:latest'"),
        (
            [LogicalModel("a", ("x",)), LogicalModel("b", ("x:latest",))],
            "'x:latest' names both 'a' and 'b'",
        ),
        ([LogicalModel("a", ("b",)), LogicalModel("b")], "'b' names both 'a' and 'b'"),
        ([LogicalModel("  ")], "a logical model needs a name"),
        ([LogicalModel("a", ("",))], "'a' has an empty alias"),
        (
            [
                LogicalModel("a", upstreams={"g": "u"}),
                LogicalModel("b", upstreams={"g": "u:latest"}),
            ],
            "g's 'u:latest' is claimed by both 'a' and 'b'",
        ),
    ],
)
def test_conflicting_models_are_refused(models: list[LogicalModel], why: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        ModelMap(models)
    assert str(excinfo.value) == why


def test_one_upstream_name_may_serve_different_models_on_different_backends() -> None:
    # llama.cpp servers often all report one generic id.
    a = LogicalModel("a", upstreams={"cpp1": "model"})
    b = LogicalModel("b", upstreams={"cpp2": "model"})
    models = ModelMap([a, b])
    assert upstreams(models.backend_models("cpp1", openai("model"))) == {"a:latest": "model"}
    assert upstreams(models.backend_models("cpp2", openai("model"))) == {"b:latest": "model"}
