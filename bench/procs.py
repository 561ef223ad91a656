"""Child-process plumbing for the benchmark: spawn pinned, measure, always clean up.

Every child starts in its own session (process group), so stopping it stops whatever
it forked too (nginx workers, uvicorn/LiteLLM workers). `Children.stop_all` runs from
`finally`, atexit and SIGTERM, so nothing outlives the runner.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Children",
    "free_port",
    "git_state",
    "http_get",
    "machine_facts",
    "pin",
    "tree_cpu_seconds",
    "tree_pids",
    "tree_rss_kib",
    "wait_until",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """Prefix `cmd` with `taskset -c cpus` (no-op when cpus is None or taskset is absent)."""
    if cpus is None or shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", cpus, *cmd]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class Children:
    """Owns every process the runner starts; `stop_all` is idempotent."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        atexit.register(self.stop_all)
        # SIGTERM -> SystemExit, so `finally` blocks run; Ctrl-C is KeyboardInterrupt already.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def start(self, cmd: Sequence[str], *, log: Path, **kw: object) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kw,  # type: ignore[call-overload]
        )
        out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in the group (forked workers) gets SIGKILL.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool]
) -> float:
    """Poll `check` until true; return seconds waited. Fails fast if the process died."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def tree_rss_kib(root: int) -> dict[str, int]:
    """Current RSS and peak RSS (VmHWM), summed over the process tree, in KiB."""
    pids = tree_pids(root)
    return {
        "rss_kib": sum(_status_kib(p, "VmRSS") for p in pids),
        "hwm_kib": sum(_status_kib(p, "VmHWM") for p in pids),
        "processes": len(pids),
    }


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU seconds used so far by the process tree."""
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def git_state(repo: Path) -> dict[str, Any]:
    """Which gateway code was measured: HEAD and whether corral/ had local edits."""

    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], cwd=repo, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "corral_dirty": bool(git("status", "--porcelain", "--", "corral")),
    }


def machine_facts() -> dict[str, Any]:
    """The machine a result was measured on."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg_at_end": os.getloadavg(),
    }
