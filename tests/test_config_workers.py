"""The `workers` settings: templates, ranges and the rules between them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from corral.config import ConfigError, load_settings
from corral.config.workers import fill_template

SIM = "'{python} -m corral.sim --port {port}'"  # quoted: YAML reads {...} as a mapping


def load(tmp_path: Path, text: str, **environ: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "corral.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return load_settings(path, environ=environ)


def problems(tmp_path: Path, text: str, **environ: str) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text, **environ)
    return list(excinfo.value.problems)


def test_workers_are_off_by_default() -> None:
    w = load_settings(environ={}).workers
    assert not w.enabled
    assert (w.provider, w.kind, w.min, w.max, w.ports, w.port_range) == (
        "process",
        "ollama",
        0,
        4,
        "",
        None,
    )
    assert (w.cooldown_s, w.idle_s, w.interval_s, w.ready_timeout_s) == (60, 300, 5, 120)


def test_a_full_workers_section_loads(tmp_path: Path) -> None:
    w = load(
        tmp_path,
        """
        workers:
          command: ollama serve
          env:
            OLLAMA_HOST: "{host}:{port}"
            CUDA_VISIBLE_DEVICES: "{gpu}"
            OLLAMA_NUM_PARALLEL: 4
          gpus: [0, 1]
          ports: 21000-21003
          min: 1
          max: 4
          models: [llama3.2:1b]
          scale_up_queue: 2
          cooldown_s: 0
        """,
    ).workers
    assert w.enabled
    assert w.argv() == ["ollama", "serve"]
    assert w.env == {
        "OLLAMA_HOST": "{host}:{port}",
        "CUDA_VISIBLE_DEVICES": "{gpu}",
        "OLLAMA_NUM_PARALLEL": "4",
    }
    assert w.gpus == ["0", "1"]  # YAML numbers become ids
    assert w.port_range == (21000, 21003)
    assert (w.min, w.max, w.models, w.scale_up_queue, w.cooldown_s) == (
        1,
        4,
        ["llama3.2:1b"],
        2,
        0,
    )


def test_workers_from_the_environment() -> None:
    s = load_settings(
        environ={
            "CORRAL_WORKERS__COMMAND": "ollama serve",
            "CORRAL_WORKERS__ENV": "OLLAMA_HOST={host}:{port},CUDA_VISIBLE_DEVICES={gpu}",
            "CORRAL_WORKERS__GPUS": "0,1",
            "CORRAL_WORKERS__MAX": "2",
            "REQUIRED_MODEL": "llama3.2:1b",  # seed 001's name
        }
    )
    w = s.workers
    assert w.env == {"OLLAMA_HOST": "{host}:{port}", "CUDA_VISIBLE_DEVICES": "{gpu}"}
    assert (w.gpus, w.max, w.models) == (["0", "1"], 2, ["llama3.2:1b"])


def test_a_command_without_a_port_is_refused(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "workers:\n  command: ollama serve\n")
    assert "must carry {port}" in line
    assert line.startswith(str(tmp_path / "corral.yaml") + ":1: workers:")


def test_a_mistyped_placeholder_is_named(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "workers:\n  command: serve --port {prot}\n")
    assert "unknown placeholder {prot}" in line
    assert "{port}" in line  # the known ones are listed


def test_gpu_placeholder_needs_gpus(tmp_path: Path) -> None:
    text = "workers:\n  command: serve --port {port}\n  env: {CUDA_VISIBLE_DEVICES: '{gpu}'}\n"
    (line,) = problems(tmp_path, text)
    assert "{gpu} is used but gpus is empty" in line


def test_min_above_max_is_refused(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, f"workers:\n  command: {SIM}\n  min: 3\n  max: 2\n")
    assert "min (3) is above max (2)" in line


def test_min_needs_a_command(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "workers:\n  min: 1\n")
    assert "min needs a command" in line


def test_a_port_range_smaller_than_max_is_refused(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, f"workers:\n  command: {SIM}\n  ports: 100-101\n  max: 3\n")
    assert "holds 2 ports, fewer than max (3)" in line


@pytest.mark.parametrize("ports", ["abc", "100-", "0-10", "20-10", "1-70000"])
def test_a_malformed_port_range_is_refused(tmp_path: Path, ports: str) -> None:
    (line,) = problems(tmp_path, f"workers:\n  command: {SIM}\n  ports: '{ports}'\n")
    assert "workers.ports" in line


def test_an_unbalanced_quote_in_the_command_is_refused(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, 'workers:\n  command: "serve --port {port} \'x"\n')
    assert "workers.command: cannot be split into arguments" in line


def test_a_bad_env_item_is_refused() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"CORRAL_WORKERS__ENV": "JUSTANAME"})
    assert "'JUSTANAME' is not NAME=VALUE" in excinfo.value.problems[0]


def test_templates_fill_known_names_and_leave_other_braces() -> None:
    values = {"port": "9000", "gpu": "1"}
    assert fill_template("--port={port} --gpu {gpu}", values) == "--port=9000 --gpu 1"
    assert fill_template('{"a": 1} {unknown}', values) == '{"a": 1} {unknown}'
