"""The agent's options and host telemetry, in process: bad options are one clear line
and exit code 2; a host without GPUs reports none; addresses leave loopback out."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.agent.options import AgentOptions, OptionError, advertised_url, read_token
from corral.agent.telemetry import Telemetry, reachable_addresses
from corral.app import cli
from tests.agent.support import TOKEN


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    if "agent" not in {c.name for c in cli.app.registered_commands}:
        cli._register_agent()
    result = CliRunner().invoke(cli.app, ["agent", *args], env=env or {})
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no fleet token"),
        (("--token", "short"), "fleet token: must be at least 16 characters"),
        (("--token", TOKEN, "--node-id", "bad id"), "--node-id: 'bad id' is not a node id"),
        (("--token", TOKEN, "--kind", "tgi"), "--kind: 'tgi' is not ollama or openai"),
        (("--token", TOKEN, "--engine", "gpu1:11434"), "--engine: 'gpu1:11434' must be"),
        (("--token", TOKEN, "--interval", "0"), "--interval: must be above 0"),
        (("--token", TOKEN, "--token-file", "x"), "give the fleet token once"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_code_2(args: tuple[str, ...], message: str) -> None:
    code, output = run("--gateway", "http://gw:8088", *args, env={"CORRAL_FLEET_TOKEN": ""})
    assert code == 2, output
    assert output.startswith("corral agent: ")
    assert message in output
    assert "Traceback" not in output


def test_the_token_comes_from_the_env_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token(None, path) == TOKEN
    assert read_token(TOKEN, None) == TOKEN
    with pytest.raises(OptionError, match="--token-file"):
        read_token(None, tmp_path / "missing")


def _opts(**kw: object) -> AgentOptions:
    base: dict[str, object] = {
        "gateway": "http://gw:8088/",
        "token": TOKEN,
        "engine": "http://127.0.0.1:11434",
        "kind": "ollama",
        "node_id": "gpu-1",
        "interval_s": 10.0,
    }
    return AgentOptions.checked(**(base | kw))  # type: ignore[arg-type]


def test_the_advertised_url_is_the_engine_the_relay_or_the_given_one() -> None:
    assert advertised_url(_opts(), 0, ["10.0.0.5"]) == "http://127.0.0.1:11434"
    relay = _opts(relay=True, relay_port=11435)
    assert advertised_url(relay, 11435, ["10.0.0.5", "fd00::5"]) == "http://10.0.0.5:11435"
    assert advertised_url(relay, 11435, ["fd00::5"]) == "http://[fd00::5]:11435"
    bound = _opts(relay=True, relay_host="192.168.1.9")
    assert advertised_url(bound, 4000, ["10.0.0.5"]) == "http://192.168.1.9:4000"
    given = _opts(relay=True, advertise_url="http://node7.lan:9999")
    assert advertised_url(given, 4000, []) == "http://node7.lan:9999"
    assert _opts().gateway == "http://gw:8088"


def test_a_host_without_gpus_reports_none_and_no_error(caplog: pytest.LogCaptureFixture) -> None:
    import pynvml  # installed here (the test extra), so the driver-less path is exercised

    assert pynvml is not None
    telemetry = Telemetry()
    try:
        assert telemetry.gpus() == []
        assert telemetry.cpu()["count"] >= 1
        assert telemetry.memory()["total_bytes"] > 0
    finally:
        telemetry.close()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_reachable_addresses_leave_out_loopback_and_link_local() -> None:
    for text in reachable_addresses():
        ip = ipaddress.ip_address(text)
        assert not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)
