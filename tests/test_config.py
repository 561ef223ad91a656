from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

from corral.config import (
    RESERVED_ENV,
    SEED_ALIASES,
    BackendConfig,
    ConfigError,
    Settings,
    dump_yaml,
    load_settings,
    parse_backend,
)
from corral.core.models import LogicalModel, ModelMap

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def write(tmp_path: Path, text: str, name: str = "corral.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> tuple[str, ...]:
    return excinfo.value.problems


# --- defaults and layering ---------------------------------------------------------


def test_defaults_match_the_documented_values() -> None:
    s = load_settings(environ={})
    assert (s.host, s.port, s.backends, s.policy, s.log_level) == (
        "127.0.0.1",
        8088,
        [],
        "corral",
        "info",
    )
    assert (s.health.interval_s, s.health.timeout_s, s.health.models_refresh_s) == (5, 3, 30)
    t = s.timeouts
    assert (t.connect_s, t.first_byte_s, t.stream_idle_s, t.request_s) == (10, 600, 300, 3600)
    assert (s.queue.max_waiting, s.queue.timeout_s, s.queue.retry_after_s) == (1024, 30, 2)
    assert (s.retry.attempts, s.retry.backoff_s, s.retry.backoff_max_s) == (3, 0.05, 1.0)
    assert (s.limits.max_body_bytes, s.limits.max_streams) == (32 * 1024 * 1024, 1000)
    assert (s.cors.origins, s.cors.allow_credentials, s.cors.max_age_s) == ([], False, 600)


def test_yaml_file_sets_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        port: 9000
        policy: round_robin
        log_level: debug
        timeouts:
          connect_s: 2.5
        backends:
          - http://gpu1:11434
          - name: cloud
            url: https://api.example.com/v1
            kind: openai
            weight: 2
        """,
    )
    s = load_settings(path, environ={})
    assert (s.port, s.policy, s.log_level, s.timeouts.connect_s) == (
        9000,
        "round_robin",
        "debug",
        2.5,
    )
    assert s.timeouts.first_byte_s == 600  # untouched keys of a section keep defaults
    assert [(b.name, b.kind, b.weight) for b in s.backends] == [
        ("gpu1:11434", "ollama", 1.0),
        ("cloud", "openai", 2.0),
    ]


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\ntimeouts:\n  connect_s: 2\n  request_s: 60\n")
    s = load_settings(path, environ={"CORRAL_PORT": "9001", "CORRAL_TIMEOUTS__CONNECT_S": "5"})
    assert (s.port, s.timeouts.connect_s, s.timeouts.request_s) == (9001, 5.0, 60.0)


def test_overrides_beat_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\n")
    s = load_settings(
        path,
        environ={"CORRAL_PORT": "9001", "CORRAL_BACKENDS": "http://a:1"},
        overrides={"port": 9002, "backends": ["http://b:2"], "timeouts": {"connect_s": 1}},
    )
    assert (s.port, s.timeouts.connect_s) == (9002, 1.0)
    assert [b.name for b in s.backends] == ["b:2"]


def test_unset_flags_passed_as_none_are_ignored() -> None:
    s = load_settings(environ={"CORRAL_PORT": "9001"}, overrides={"port": None, "host": None})
    assert (s.port, s.host) == (9001, "127.0.0.1")


def test_dotted_override_keys_reach_nested_settings() -> None:
    assert load_settings(environ={}, overrides={"queue.max_waiting": 7}).queue.max_waiting == 7


def test_corral_env_beats_seed_alias() -> None:
    s = load_settings(
        environ={
            "PORT": "1111",
            "CORRAL_PORT": "2222",
            "BACKENDS": "http://seed:1",
            "CORRAL_BACKENDS": "http://mine:1",
        }
    )
    assert s.port == 2222
    assert [b.name for b in s.backends] == ["mine:1"]


@pytest.mark.parametrize(
    ("name", "raw", "read", "expected"),
    [
        ("PORT", "8123", lambda s: s.port, 8123),
        ("SELECTION_POLICY", "round_robin", lambda s: s.policy, "round_robin"),
        ("HEALTH_INTERVAL_SEC", "7", lambda s: s.health.interval_s, 7.0),
        ("CONNECT_TIMEOUT_SEC", "4", lambda s: s.timeouts.connect_s, 4.0),
        (
            "BACKENDS",
            "http://10.0.1.11:11434,http://10.0.1.12:11434",
            lambda s: [b.url for b in s.backends],
            ["http://10.0.1.11:11434", "http://10.0.1.12:11434"],
        ),
    ],
)
def test_each_seed_alias_sets_its_setting(name: str, raw: str, read: Any, expected: Any) -> None:
    assert read(load_settings(environ={name: raw})) == expected


def test_read_timeout_sec_sets_first_byte_and_stream_idle() -> None:
    t = load_settings(environ={"READ_TIMEOUT_SEC": "120"}).timeouts
    assert (t.first_byte_s, t.stream_idle_s) == (120.0, 120.0)


def test_seed_alias_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\n")
    assert load_settings(path, environ={"PORT": "9005"}).port == 9005


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "port:\ncors:\nbackends:\n  - url: http://a:1\n    name:\n")
    s = load_settings(path, environ={"CORRAL_HOST": "", "PORT": "  "})
    assert (s.port, s.host, s.cors.origins, s.backends[0].name) == (8088, "127.0.0.1", [], "a:1")


def test_env_lists_accept_json(tmp_path: Path) -> None:
    raw = '[{"url": "http://a:1", "max_concurrency": 9}, "openai+http://b:2"]'
    s = load_settings(environ={"CORRAL_BACKENDS": raw, "CORRAL_CORS__ORIGINS": '["*"]'})
    assert [(b.name, b.max_concurrency) for b in s.backends] == [("a:1", 9), ("b:2", 32)]
    assert s.cors.origins == ["*"]


def test_config_file_named_by_corral_config(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9100\n")
    assert load_settings(environ={"CORRAL_CONFIG": str(path)}).port == 9100


def test_os_environ_is_read_when_no_environ_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_PORT", "9200")
    assert load_settings().port == 9200


def test_known_policies_come_from_the_caller() -> None:
    s = load_settings(environ={"SELECTION_POLICY": "fastest"}, known_policies=["fastest"])
    assert s.policy == "fastest"
    with pytest.raises(ConfigError, match=r"env SELECTION_POLICY: policy: unknown policy"):
        load_settings(environ={"SELECTION_POLICY": "fastest"})


def test_log_level_is_case_insensitive() -> None:
    assert load_settings(environ={"CORRAL_LOG_LEVEL": "WARNING"}).log_level == "warning"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("::", "::"),
        ("[::1]", "::1"),  # the socket calls take IPv6 without brackets
        ("0:0:0:0:0:0:0:1", "::1"),
        (" 10.0.0.7 ", "10.0.0.7"),
        ("localhost", "localhost"),
        ("gateway.example.com", "gateway.example.com"),
        ("gateway.example.com.", "gateway.example.com."),
    ],
)
def test_the_listen_host_is_an_address_or_a_host_name(given: str, kept: str) -> None:
    settings = load_settings(environ={"CORRAL_HOST": given, "CORRAL_AUTH__MODE": "on"})
    assert settings.host == kept


@pytest.mark.parametrize(
    "given",
    [
        "not a host!!",
        "http://gateway",
        "gateway:8088",
        "1.2.3.4:80",
        "-bad.example",
        "a..b",
        "a" * 64 + ".example",
        "under_score.example",
    ],
)
def test_a_listen_host_that_cannot_be_bound_is_refused_at_load(given: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"CORRAL_HOST": given, "CORRAL_AUTH__MODE": "on"})
    assert any(
        "CORRAL_HOST: host:" in p and "IP address or host name" in p for p in problems(excinfo)
    )


# --- backends ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "url", "kind", "name"),
    [
        ("http://gpu1:11434", "http://gpu1:11434", "ollama", "gpu1:11434"),
        ("http://gpu1:11434/", "http://gpu1:11434", "ollama", "gpu1:11434"),
        ("ollama+http://gpu1:11434", "http://gpu1:11434", "ollama", "gpu1:11434"),
        ("openai+http://vllm:8000/v1/", "http://vllm:8000", "openai", "vllm:8000"),
        (
            "openai+https://api.example.com/v1",
            "https://api.example.com",
            "openai",
            "api.example.com:443",
        ),
        ("big=openai+https://h:8443", "https://h:8443", "openai", "big"),
        ("small = http://GPU2:11434", "http://gpu2:11434", "ollama", "small"),
        ("http://[::1]:11434", "http://[::1]:11434", "ollama", "[::1]:11434"),
    ],
)
def test_backend_string_forms(spec: str, url: str, kind: str, name: str) -> None:
    backend = parse_backend(spec)
    assert (backend.url, backend.kind, backend.name) == (url, kind, name)


def test_backend_concurrency_defaults_by_kind() -> None:
    assert parse_backend("http://a:1").max_concurrency == 4
    assert parse_backend("openai+http://a:1").max_concurrency == 32
    assert BackendConfig(url="http://a:1", max_concurrency=2).max_concurrency == 2


def test_backend_mapping_url_may_carry_the_kind_prefix(tmp_path: Path) -> None:
    path = write(tmp_path, "backends:\n  - url: openai+http://a:1\n    weight: 3\n")
    (backend,) = load_settings(path, environ={}).backends
    assert (backend.kind, backend.url, backend.weight) == ("openai", "http://a:1", 3.0)


def test_backend_kind_contradicting_url_prefix_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "backends:\n  - url: openai+http://a:1\n    kind: ollama\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={})
    assert problems(excinfo) == (
        f"{path}:2: backends[0]: kind 'ollama' contradicts the openai+ URL prefix",
    )


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("gpu1:11434", "must be an http:// or https:// URL"),
        ("ftp://gpu1:21", "must be an http:// or https:// URL"),
        ("http://gpu1", "needs an explicit port"),
        ("http://gpu1:99999", "has an invalid port"),
        ("http://u:p@gpu1:1", "must not carry credentials"),
        ("http://gpu1:1/?x=1", "must not have a query"),
        ("vllm+http://gpu1:1", "input should be 'ollama' or 'openai'"),
        ("my box=http://gpu1:1", "must be 1-128 characters"),
    ],
)
def test_bad_backend_specs_say_why(spec: str, why: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^backend {re.escape(repr(spec))}: \w+: {re.escape(why)}"
    ):
        parse_backend(spec)


def test_duplicate_backend_names_are_named() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"CORRAL_BACKENDS": "http://a:1,x=http://b:1,http://a:1"})
    assert problems(excinfo) == (
        "env CORRAL_BACKENDS: backends: duplicate backend name 'a:1' "
        "(backends[0] and backends[2]); give each a name=",
    )


# --- logical models ------------------------------------------------------------------

MODELS_YAML = """
backends:
  - gpu1=http://gpu1:11434
  - vllm-a=openai+http://vllm:8000/v1
models:
  - name: qwen2.5:7b
    aliases: [qwen, Qwen/Qwen2.5-7B-Instruct]
    backends:
      - backend: gpu1
        upstream_name: qwen2.5:7b
      - backend: vllm-a
        upstream_name: Qwen/Qwen2.5-7B-Instruct
list_unmapped: false
"""


def model_map(settings: Settings) -> ModelMap:
    models = (m.to_logical() for m in settings.models)
    return ModelMap(models, list_unmapped=settings.list_unmapped)


def test_models_default_to_none_and_unmapped_models_are_listed() -> None:
    s = load_settings(environ={})
    assert (s.models, s.list_unmapped) == ([], True)


def test_models_from_the_file_become_a_model_map(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MODELS_YAML), environ={})
    (model,) = s.models
    assert model.to_logical() == LogicalModel(
        "qwen2.5:7b",
        ("qwen", "Qwen/Qwen2.5-7B-Instruct"),
        {"gpu1": "qwen2.5:7b", "vllm-a": "Qwen/Qwen2.5-7B-Instruct"},
    )
    models = model_map(s)
    assert models.resolve("qwen") == "qwen2.5:7b"
    assert models.list_unmapped is False


def test_a_bare_name_is_a_model_without_aliases(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - llama3.2\n  - name: qwen2.5:7b\n")
    assert [m.to_logical() for m in load_settings(path, environ={}).models] == [
        LogicalModel("llama3.2"),
        LogicalModel("qwen2.5:7b"),
    ]


def test_corral_models_takes_names_separated_by_commas() -> None:
    s = load_settings(
        environ={"CORRAL_MODELS": "llama3.2, qwen2.5:7b", "CORRAL_LIST_UNMAPPED": "0"}
    )
    assert ([m.name for m in s.models], s.list_unmapped) == (["llama3.2", "qwen2.5:7b"], False)


def test_corral_models_takes_json_objects() -> None:
    raw = (
        '[{"name": "qwen2.5:7b", "aliases": ["qwen"],'
        ' "backends": [{"backend": "v", "upstream_name": "Qwen/Qwen2.5-7B-Instruct"}]},'
        ' "llama3.2"]'
    )
    s = load_settings(environ={"CORRAL_MODELS": raw, "CORRAL_BACKENDS": "v=openai+http://v:8000"})
    assert [m.to_logical() for m in s.models] == [
        LogicalModel("qwen2.5:7b", ("qwen",), {"v": "Qwen/Qwen2.5-7B-Instruct"}),
        LogicalModel("llama3.2"),
    ]


def test_model_names_are_trimmed(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: ' qwen '\n    aliases: [' q ']\n")
    assert load_settings(path, environ={}).models[0].to_logical() == LogicalModel("qwen", ("q",))


def load_problems(tmp_path: Path, text: str, **environ: str) -> tuple[str, ...]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ=environ)
    return tuple(p.replace(str(path), "corral.yaml") for p in problems(excinfo))


def test_a_repeated_name_is_rejected_after_normalization(tmp_path: Path) -> None:
    text = "port: 9000\nmodels:\n  - name: llama3\n  - name: llama3:latest\n"
    assert load_problems(tmp_path, text) == (
        "corral.yaml:2: models: models[1].name 'llama3:latest' is already the name of "
        "models[0] ('llama3') (both mean 'llama3:latest')",
    )


def test_an_alias_that_is_another_models_name_is_rejected(tmp_path: Path) -> None:
    text = "models:\n  - name: small\n  - name: big\n    aliases: [fast, small]\n"
    assert load_problems(tmp_path, text) == (
        "corral.yaml:1: models: models[1].aliases[1] 'small' is already the name of "
        "models[0] ('small')",
    )


def test_a_name_that_is_another_models_alias_is_rejected(tmp_path: Path) -> None:
    text = "models:\n  - name: qwen2.5:7b\n    aliases: [qwen]\n  - qwen:latest\n"
    assert load_problems(tmp_path, text) == (
        "corral.yaml:1: models: models[1].name 'qwen:latest' is already an alias of "
        "models[0] ('qwen2.5:7b') (both mean 'qwen:latest')",
    )


def test_every_clash_between_models_is_listed_in_one_line(tmp_path: Path) -> None:
    text = "models:\n  - name: a\n    aliases: [x, y]\n  - name: b\n    aliases: [x, y:latest]\n"
    (line,) = load_problems(tmp_path, text)
    assert line == (
        "corral.yaml:1: models: models[1].aliases[0] 'x' is already an alias of models[0] ('a'); "
        "models[1].aliases[1] 'y:latest' is already an alias of models[0] ('a') "
        "(both mean 'y:latest')"
    )


def test_a_model_repeating_its_own_name_points_at_the_model(tmp_path: Path) -> None:
    text = "models:\n  - name: a\n  - name: qwen\n    aliases:\n      - q\n      - qwen:latest\n"
    assert load_problems(tmp_path, text) == (
        "corral.yaml:3: models[1]: aliases[1] 'qwen:latest' repeats the name "
        "(both mean 'qwen:latest')",
    )


def test_a_model_naming_one_backend_twice_is_rejected(tmp_path: Path) -> None:
    text = """
    backends: [g=http://g:1]
    models:
      - name: m
        backends:
          - {backend: g, upstream_name: m1}
          - {backend: g, upstream_name: m2}
    """
    assert load_problems(tmp_path, text) == (
        "corral.yaml:3: models[0]: backends[1] names backend 'g' again (first in backends[0]); "
        "a model has one name per backend",
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("models:\n  - name: ''\n", "corral.yaml:2: models[0].name"),
        ("models:\n  - name: my model\n", "corral.yaml:2: models[0].name"),
        (
            "models:\n  - name: m\n    aliases:\n      - a\n      - ' '\n",
            "corral.yaml:5: models[0].aliases[1]",
        ),
        (
            "backends: [g=http://g:1]\nmodels:\n  - name: m\n    backends:\n"
            "      - backend: g\n        upstream_name: ''\n",
            "corral.yaml:6: models[0].backends[0].upstream_name",
        ),
    ],
)
def test_an_empty_or_spaced_model_name_points_at_its_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    (line,) = load_problems(tmp_path, text)
    assert line.startswith(f"{problem}: must be a model name without spaces, e.g. qwen2.5:7b")


def test_a_model_without_a_name_is_rejected(tmp_path: Path) -> None:
    assert load_problems(tmp_path, "models:\n  - aliases: [a]\n") == (
        "corral.yaml:2: models[0].name: required",
    )


def test_an_unknown_key_in_a_model_suggests_the_right_one(tmp_path: Path) -> None:
    text = """
    models:
      - name: m
        alias: [a]
        backends:
          - backend: g
            upstream: u
    """
    assert load_problems(tmp_path, text) == (
        "corral.yaml:5: models[0].backends[0].upstream_name: required",
        "corral.yaml:6: models[0].backends[0].upstream: unknown setting "
        "(did you mean upstream_name?)",
        "corral.yaml:3: models[0].alias: unknown setting (did you mean aliases?)",
    )


def test_a_backend_that_is_not_configured_is_rejected(tmp_path: Path) -> None:
    text = MODELS_YAML.replace("backend: vllm-a", "backend: vllm-b")
    assert load_problems(tmp_path, text) == (
        "corral.yaml:4: models: models[0].backends[1].backend 'vllm-b' is not a configured "
        "backend (known: gpu1, vllm-a)",
    )


def test_backends_are_checked_as_finally_configured(tmp_path: Path) -> None:
    # CORRAL_BACKENDS replaces the file's list, so gpu1 is gone by then.
    assert load_problems(tmp_path, MODELS_YAML, CORRAL_BACKENDS="vllm-a=http://v:1") == (
        "corral.yaml:4: models: models[0].backends[0].backend 'gpu1' is not a configured "
        "backend (known: vllm-a)",
    )
    text = "models:\n  - name: m\n    backends: [{backend: g, upstream_name: u}]\n"
    assert load_problems(tmp_path, text) == (
        "corral.yaml:1: models: models[0].backends[0].backend 'g' is not a configured "
        "backend (known: none are configured)",
    )


def test_bad_backends_do_not_also_fail_the_models(tmp_path: Path) -> None:
    text = MODELS_YAML.replace("gpu1=http://gpu1:11434", "gpu1=ftp://gpu1:21")
    (line,) = load_problems(tmp_path, text)
    assert line.startswith("corral.yaml:2: backends[0].url: must be an http")


def test_one_upstream_name_claimed_twice_on_a_backend_is_rejected(tmp_path: Path) -> None:
    text = """
    backends: [g=http://g:1, h=http://h:1]
    models:
      - name: a
        backends: [{backend: g, upstream_name: model}]
      - name: b
        backends: [{backend: h, upstream_name: model}, {backend: g, upstream_name: 'model:latest'}]
    """
    assert load_problems(tmp_path, text) == (
        "corral.yaml:2: models: models[1].backends[1].upstream_name 'model:latest' on 'g' "
        "already names models[0] there",
    )


def test_list_unmapped_must_be_true_or_false() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"CORRAL_LIST_UNMAPPED": "maybe"})
    assert problems(excinfo)[0].startswith(
        "env CORRAL_LIST_UNMAPPED: list_unmapped: input should be a valid boolean"
    )


def test_models_round_trip_through_dump_yaml(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MODELS_YAML), environ={})
    again = load_settings(write(tmp_path, dump_yaml(settings), "dumped.yaml"), environ={})
    assert again == settings


def test_docs_logical_models_example_loads_and_its_error_is_real(tmp_path: Path) -> None:
    docs = DOCS.read_text().split("## Logical models\n", 1)[1].split("\n## ", 1)[0]
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    backends = "backends: [gpu1=http://gpu1:11434, vllm-a=openai+http://vllm:8000/v1]\n"
    settings = load_settings(write(tmp_path, backends + example), environ={})
    assert model_map(settings).resolve("Qwen/Qwen2.5-7B-Instruct") == "qwen2.5:7b"
    shown = docs.split("```\ncorral.yaml:", 1)[1].split("\n", 1)[0]
    clash = "# padding\n" * 11 + "models:\n  - {name: qwen2.5:7b, aliases: [qwen]}\n"
    clash += "  - {name: qwen2, aliases: ['qwen:latest']}\n"
    assert load_problems(tmp_path, clash) == ("corral.yaml:" + shown,)


# --- errors --------------------------------------------------------------------------


def test_bad_value_in_file_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\ntimeouts:\n  first_byte_s: 60\n  connect_s: -1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={})
    assert str(excinfo.value) == (
        f"{path}:4: timeouts.connect_s: input should be greater than 0 (got -1)"
    )


def test_unknown_key_in_file_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\n\ntimeouts:\n  conect_s: 3\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={})
    assert problems(excinfo) == (
        f"{path}:4: timeouts.conect_s: unknown setting (did you mean connect_s?)",
    )


def test_error_in_a_backend_item_points_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        backends:
          - http://a:1
          - ftp://b:2
          - url: http://c:3
            max_concurrency: 0
        """,
    )
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={})
    assert problems(excinfo) == (
        f"{path}:3: backends[1].url: must be an http:// or https:// URL, "
        "e.g. http://gpu1:11434 (got 'ftp://b:2')",
        f"{path}:5: backends[2].max_concurrency: input should be greater than or equal to 1 "
        "(got 0)",
    )


def test_env_list_replaces_file_list_and_errors_point_at_env(tmp_path: Path) -> None:
    path = write(tmp_path, "backends:\n  - http://a:1\n  - http://b:2\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={"CORRAL_BACKENDS": "http://c:3,http://d"})
    assert problems(excinfo)[0].startswith("env CORRAL_BACKENDS: backends[1].url: needs an")


def test_bad_env_var_names_the_variable() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"CORRAL_TIMEOUTS__CONNECT_S": "soon"})
    assert str(excinfo.value).startswith(
        "env CORRAL_TIMEOUTS__CONNECT_S: timeouts.connect_s: input should be a valid number"
    )


def test_bad_seed_alias_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^env PORT: port: input should be a valid integer"):
        load_settings(environ={"PORT": "http"})


def test_bad_override_names_the_flag() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={}, overrides={"port": 0, "log_level": "loud"})
    assert [p.split(":")[0] for p in problems(excinfo)] == ["--port", "--log-level"]


def test_unknown_corral_env_var_is_rejected() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"CORRAL_PROT": "9000", "CORRAL_TIMEOUTS": "5"})
    assert problems(excinfo) == (
        "env CORRAL_PROT: unknown setting (did you mean CORRAL_PORT?)",
        "env CORRAL_TIMEOUTS: timeouts is a group of settings; "
        "set one of them, e.g. CORRAL_TIMEOUTS__CONNECT_S",
    )


def test_reserved_corral_env_vars_are_not_settings() -> None:
    assert {"CORRAL_CONFIG", "CORRAL_ADMIN_KEY"} <= RESERVED_ENV
    load_settings(environ={"CORRAL_ADMIN_KEY": "secret", "CORRAL_CONFIG": ""})


def test_the_remote_clis_env_vars_do_not_stop_the_gateway() -> None:
    # An operator's shell on the gateway host may carry them for `corral status` & co.
    load_settings(
        environ={
            "CORRAL_URL": "http://gw:8088",
            "CORRAL_API_KEY": "crl_x",
            "CORRAL_CLI_CONFIG": "/etc/corral-cli.toml",
        }
    )


def test_unrelated_env_vars_are_ignored() -> None:
    load_settings(environ={"HOME": "/root", "PORTAGE": "x", "OLLAMA_HOST": "0.0.0.0"})


def test_several_problems_are_listed_one_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "port: -1\nretry:\n  attempts: 0\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={"CORRAL_NOPE": "1"})
    lines = str(excinfo.value).splitlines()
    assert lines[0] == "3 configuration problems:"
    assert [line.split(": ")[0].strip() for line in lines[1:]] == [
        "env CORRAL_NOPE",
        f"{path}:1",
        f"{path}:3",
    ]


def test_cross_field_errors_name_the_section(tmp_path: Path) -> None:
    path = write(
        tmp_path, "retry:\n  backoff_s: 2\ncors:\n  origins: ['*']\n  allow_credentials: true\n"
    )
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={})
    assert problems(excinfo) == (
        f"{path}:1: retry: backoff_max_s (1.0) is below backoff_s (2.0)",
        f"{path}:3: cors: allow_credentials cannot be combined with origin '*'",
    )


DURATIONS = [
    f"{section}.{key}"
    for section in ("health", "timeouts", "queue", "retry")
    for key, info in Settings.model_fields[section].annotation.model_fields.items()  # type: ignore[union-attr]
    if key.endswith("_s") and info.annotation is float
]


@pytest.mark.parametrize("key", DURATIONS)
def test_durations_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--{key.replace('_', '-')}: {key}: .*greater than 0"):
        load_settings(environ={}, overrides={key: 0})


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\ntimeouts:\n  connect_s: [1, 2\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={})
    (line,) = problems(excinfo)
    assert line.startswith(f"{path}:4: invalid YAML: ")
    assert "\n" not in str(excinfo.value)


def test_repeated_yaml_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\nhost: 0.0.0.0\nport: 9001\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={})
    assert problems(excinfo) == (f"{path}:3: port: repeated key (first on line 1)",)


def test_yaml_keys_must_be_text(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\n8088: true\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ={})
    assert problems(excinfo) == (f"{path}:2: 8088: a key must be text",)


def test_self_referencing_yaml_anchor_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "health: &loop {again: *loop}\n")
    with pytest.raises(ConfigError, match=r":1: health.again: nested too deeply"):
        load_settings(path, environ={})


def test_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- http://a:1\n")
    with pytest.raises(ConfigError, match=r":1: the file must be a mapping of settings"):
        load_settings(path, environ={})


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# nothing yet\n"), environ={}) == Settings()


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as excinfo:
        load_settings(missing, environ={})
    assert str(excinfo.value) == f"{missing}: config file not found"
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"CORRAL_CONFIG": str(missing)})
    assert str(excinfo.value) == f"{missing}: config file not found (named by env CORRAL_CONFIG)"


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- the model as a value ----------------------------------------------------------------


def test_dump_yaml_round_trips(tmp_path: Path) -> None:
    settings = load_settings(
        environ={},
        overrides={
            "port": 9999,
            "backends": ["gpu=http://gpu1:11434", "openai+https://api.example.com/v1"],
            "policy": "round_robin",
            "timeouts": {"first_byte_s": 42.5},
            "cors": {"origins": ["https://app.example.com"], "allow_credentials": True},
        },
    )
    path = write(tmp_path, dump_yaml(settings))
    assert load_settings(path, environ={}) == settings


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1


def test_json_schema_describes_every_section() -> None:
    schema = Settings.model_json_schema()
    assert set(schema["properties"]) == set(Settings.model_fields)
    backend = schema["$defs"]["BackendConfig"]
    assert backend["required"] == ["url"]
    assert backend["properties"]["kind"]["enum"] == ["ollama", "openai"]


# --- docs (STYLE.md #11) ---------------------------------------------------------------


def _dotted_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, bool]]:
    """(dotted key, settable by its own CORRAL_* variable) for every field, recursively."""
    for key, info in model.model_fields.items():
        dotted = prefix + key
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _dotted_keys(annotation, dotted + ".")
            continue
        yield dotted, "[]" not in prefix
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _dotted_keys(arg, dotted + "[].")


def test_docs_mention_every_setting() -> None:
    docs = DOCS.read_text()
    missing = [key for key, _ in _dotted_keys(Settings) if f"`{key}`" not in docs]
    assert not missing, f"docs/configuration.md lacks: {missing}"


def test_docs_mention_every_env_var() -> None:
    docs = DOCS.read_text()
    names = [
        "CORRAL_" + key.upper().replace(".", "__") for key, own in _dotted_keys(Settings) if own
    ]
    names += [*SEED_ALIASES, *RESERVED_ENV]
    missing = [name for name in names if f"`{name}`" not in docs]
    assert not missing, f"docs/configuration.md lacks: {missing}"


def test_docs_example_file_loads(tmp_path: Path) -> None:
    example = DOCS.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    settings = load_settings(write(tmp_path, example), environ={})
    assert [b.name for b in settings.backends] == [
        "10.0.1.11:11434",
        "gpu2",
        "vllm",
        "10.0.1.13:11434",
    ]


def test_request_audit_is_off_by_default_and_needs_the_usage_journal(tmp_path: Path) -> None:
    a = load_settings(environ={}).audit
    assert (a.content, a.retention_days, a.purge_interval_s, a.max_text_chars) == (
        "off",
        30,
        3600,
        100_000,
    )
    on = load_settings(environ={"CORRAL_AUDIT__CONTENT": "full"}).audit
    assert on.content == "full"
    (problem,) = load_problems(tmp_path, "audit:\n  content: metadata\nusage:\n  journal: false\n")
    assert "audit.content is metadata but usage.journal is false" in problem
    (level,) = load_problems(tmp_path, "audit:\n  content: everything\n")
    assert level.startswith("corral.yaml:2: audit.content:")
    (days,) = load_problems(tmp_path, "audit:\n  retention_days: 0\n")
    assert "audit.retention_days" in days


def test_an_openai_base_url_ending_in_v1_is_the_servers_root() -> None:
    settings = load_settings(
        environ={},
        overrides={
            "backends": [
                "openai+http://vllm:8000/v1",
                {"url": "http://proxy:8080/llm/v1/", "kind": "openai"},
                "http://ollama:11434/v1",  # an Ollama path is left as given
            ]
        },
    )
    assert [b.url for b in settings.backends] == [
        "http://vllm:8000",
        "http://proxy:8080/llm",
        "http://ollama:11434/v1",
    ]
