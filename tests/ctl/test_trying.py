"""``corral chat`` and ``corral generate`` against a real gateway and simulated nodes."""

from __future__ import annotations

from pathlib import Path

from corral.adapters.store.keys import ADMIN_KEY_ENV
from corral.sim.launch import NodeSpec
from tests.ctl.support import run_cli
from tests.helpers import free_port, sim_fleet

KEY = "crl_" + "k" * 40


async def test_generate_streams_the_answer_to_stdout(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        ran = await run_cli(
            "generate",
            "llama3.2:1b",
            "Say hi",
            "-o",
            "num_predict=8",
            "--verbose",
            "--url",
            fleet.url,
            home=tmp_path,
        )
    assert ran.code == 0, ran.err
    assert ran.out.strip(), "no answer printed"
    assert "8 generated" in ran.err


async def test_chat_once_and_as_a_conversation_on_stdin(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        once = await run_cli("chat", "llama3.2:1b", "hello", "--url", fleet.url, home=tmp_path)
        talk = await run_cli(
            "chat",
            "llama3.2:1b",
            "--url",
            fleet.url,
            "-v",
            stdin="first question\nsecond question\n/bye\nnever sent\n",
            home=tmp_path,
        )
        served = sum(n.model.stats.completed for n in fleet.nodes)
    assert once.code == 0 and once.out.strip()
    assert talk.code == 0, talk.err
    assert talk.err.count("generated") == 2  # two turns answered, the one after /bye not sent
    assert served == 3


async def test_unreachable_gateway_is_one_error_line(tmp_path: Path) -> None:
    ran = await run_cli(
        "generate", "m", "x", "--url", f"http://127.0.0.1:{free_port()}", home=tmp_path
    )
    assert ran.code == 1
    assert ran.err.startswith("error: cannot reach the gateway")
    assert "Traceback" not in ran.err and ran.err.count("\n") == 1


async def test_unknown_model_is_the_gateways_message(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec()) as fleet:
        ran = await run_cli("generate", "no-such-model", "x", "--url", fleet.url, home=tmp_path)
    assert ran.code == 1
    assert ran.err.startswith("error: 404 from /api/generate:")
    assert "no-such-model" in ran.err


async def test_key_from_flag_env_or_config_file(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec(), auth={"mode": "on"}, environ={ADMIN_KEY_ENV: KEY}) as fleet:
        none = await run_cli("generate", "llama3.2:1b", "x", "--url", fleet.url, home=tmp_path)
        flag = await run_cli(
            "generate", "llama3.2:1b", "x", "--url", fleet.url, "--key", KEY, home=tmp_path
        )
        env = await run_cli(
            "generate",
            "llama3.2:1b",
            "x",
            home=tmp_path,
            env={"CORRAL_URL": fleet.url, "CORRAL_API_KEY": KEY},
        )
        (tmp_path / "corral").mkdir()
        (tmp_path / "corral" / "config.toml").write_text(f'url = "{fleet.url}"\nkey = "{KEY}"\n')
        file = await run_cli("generate", "llama3.2:1b", "x", home=tmp_path)
    assert none.code == 1 and "401" in none.err and "CORRAL_API_KEY" in none.err
    assert (flag.code, env.code, file.code) == (0, 0, 0), (flag.err, env.err, file.err)


async def test_bad_option_and_bad_config_file_are_one_line(tmp_path: Path) -> None:
    bad_opt = await run_cli("generate", "m", "x", "-o", "temperature", home=tmp_path)
    (tmp_path / "corral").mkdir()
    (tmp_path / "corral" / "config.toml").write_text("url = [")
    bad_file = await run_cli("generate", "m", "x", home=tmp_path)
    assert bad_opt.code == 1 and bad_opt.err.startswith("error: --option 'temperature'")
    assert bad_file.code == 1 and bad_file.err.startswith("error: cannot read")
