"""`corral agent` as a real process, for the agent's tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["TOKEN", "AgentProcess", "agent_process"]

TOKEN = "fleet-token-" + "t" * 24


@dataclass
class AgentProcess:
    """One agent process; `restart` runs it again with the same arguments."""

    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    outputs: list[str] = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self._buf = bytearray()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "agent", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)

    def peek(self) -> str:
        """What the running process has written so far (without waiting)."""
        proc = self.proc
        if proc is not None and proc.stdout is not None and not proc.stdout.closed:
            while True:
                try:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                self._buf += chunk
        return self._buf.decode("utf-8", "replace")

    def kill(self) -> str:
        """SIGKILL: the agent dies without a word, as in a crash or a pulled cable."""
        return self._end(signal.SIGKILL)

    def stop(self) -> str:
        return self._end(signal.SIGTERM)

    def _end(self, sig: int) -> str:
        proc = self.proc
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out = self.peek()  # the process has exited: everything it wrote is there
        if proc.stdout is not None:
            proc.stdout.close()
        self.outputs.append(out)
        return out

    @property
    def output(self) -> str:
        return "".join(self.outputs)


@contextlib.asynccontextmanager
async def agent_process(
    gateway: str,
    engine: str,
    *extra: str,
    node_id: str = "n1",
    interval: float = 0.2,
    token: str = TOKEN,
) -> AsyncIterator[AgentProcess]:
    """An agent heartbeating ``engine`` to ``gateway``; the token comes from the env,
    as the docs advise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["CORRAL_FLEET_TOKEN"] = token
    args = ["--gateway", gateway, "--engine", engine, "--node-id", node_id]
    args += ["--interval", str(interval), *extra]
    agent = AgentProcess(args, env)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
