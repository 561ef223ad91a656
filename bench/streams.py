"""Streaming benchmark: many concurrent streams through Corral, pass-through and translated.

    .venv/bin/python bench/streams.py            # all four cases, ~4-5 minutes
    .venv/bin/python bench/streams.py --quick    # shorter windows, under 90 s
    .venv/bin/python bench/streams.py --cases ollama-pass --levels 100
    .venv/bin/python bench/streams.py --auth     # API keys and a budget: streams charged

Layout (2 cores): Corral is pinned to core 0, alone. The paced backend
(bench/stream_backend.py: 50 chunks at 20 ms by default, one timer for all streams) and
this load generator (uvloop, one raw asyncio protocol per connection, a timestamp per
read) share core 1. Every load runs once DIRECT to the backend and once VIA Corral;
"added" is via minus direct, so the client's and backend's own delays cancel out.

Cases (client dialect → backend kind):
    ollama-pass     Ollama → Ollama   bytes forwarded untouched
    openai-pass     OpenAI → OpenAI   SSE events forwarded (usage event read on the way)
    openai→ollama   OpenAI client, Ollama backend: NDJSON decoded, SSE encoded
    ollama→openai   Ollama client, OpenAI backend: SSE decoded, NDJSON encoded

Per case: (1) 100 streams paced at the backend's default pace; (2) a saturation ramp
with 1,000 open streams, shortening the backend's interval (for all streams at once,
through its /bench/pace endpoint) until Corral's core is ~100% busy — the chunks/s
there is what the core sustains; (3) 1,000 streams paced at --fraction of that rate,
direct and via, with Corral's RSS read while they are open.

Corral's CPU is Δ(utime+stime) of its process from /proc/PID/stat over a measurement
window divided by the chunks the clients received in it (the per-request work of
starting each stream is included, spread over its chunks). Results: a Markdown table on
stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import (
    CLK_TCK,
    Children,
    free_port,
    git_state,
    http_get,
    machine_facts,
    pin,
    tree_cpu_seconds,
    tree_rss_kib,
    wait_until,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

# Issue targets.
CPU_US_PASS = 25.0  # Corral CPU per relayed chunk, pass-through
CPU_US_TRANSLATE = 2 * CPU_US_PASS
ADDED_ICD_P99_MS = 10.0  # added inter-chunk p99 with 1,000 streams


@dataclass(frozen=True)
class Case:
    name: str
    client: str  # "ollama" | "openai"
    backend: str  # "ollama" | "openai"

    @property
    def translated(self) -> bool:
        return self.client != self.backend


CASES = {
    c.name: c
    for c in (
        Case("ollama-pass", "ollama", "ollama"),
        Case("openai-pass", "openai", "openai"),
        Case("openai→ollama", "openai", "ollama"),
        Case("ollama→openai", "ollama", "openai"),
    )
}
CASE_ALIASES = {"a": "ollama-pass", "b": "openai-pass", "c": "openai→ollama", "d": "ollama→openai"}
CASE_ALIASES |= {"openai-ollama": "openai→ollama", "ollama-openai": "ollama→openai"}


# ---- the load generator ----------------------------------------------------------


# With --auth: the API key each gateway (by port) was given, sent with every request.
KEYS: dict[int, str] = {}


def request_bytes(dialect: str, port: int) -> bytes:
    content = "Write a long answer about streaming benchmarks."
    if dialect == "ollama":
        path = "/api/chat"
        body: dict[str, Any] = {
            "model": "bench",
            "messages": [{"role": "user", "content": content}],
            "stream": True,
        }
    else:
        path = "/v1/chat/completions"
        body = {
            "model": "bench",
            "messages": [{"role": "user", "content": content}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    data = json.dumps(body, separators=(",", ":")).encode()
    auth = f"Authorization: Bearer {KEYS[port]}\r\n" if port in KEYS else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


class Recorder:
    """What the clients saw inside the current measurement window."""

    def __init__(self) -> None:
        self.recording = False
        self.reset()

    def reset(self) -> None:
        self.chunks = 0
        self.gaps: list[float] = []
        self.ttfts: list[float] = []
        self.streams = 0
        self.errors = 0
        self.connects = 0


class Client(asyncio.Protocol):
    """One keep-alive connection; streams one after another; a timestamp per read.

    Chunks are counted by a marker that every application chunk has exactly once
    (`}\\n` ends each NDJSON line, `data:` starts each SSE event); a read holding k of
    them yields one gap since the previous read and k-1 gaps of 0.
    """

    def __init__(self, rec: Recorder, marker: bytes) -> None:
        self.rec = rec
        self.marker = marker
        self.keep = len(marker) - 1
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[bool] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            self.rec.errors += self.rec.recording
            self.done.set_result(False)

    def begin(self, request: bytes, done: asyncio.Future[bool]) -> None:
        assert self.transport is not None
        self.done = done
        self.carry = b""
        self.tail = b""
        self.head = True
        self.last = 0.0
        self.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter()
        rec = self.rec
        if self.head:
            self.head = False
            if not data.startswith(b"HTTP/1.1 200"):
                rec.errors += 1
                self._finish(False)
                return
        buf = self.carry + data if self.carry else data
        n = buf.count(self.marker)
        self.carry = buf[-self.keep :]
        if n:
            if rec.recording:
                rec.chunks += n
                if self.last:
                    rec.gaps.append(t - self.last)
                    if n > 1:
                        rec.gaps.extend([0.0] * (n - 1))
                else:
                    rec.ttfts.append(t - self.sent)
                    if n > 1:
                        rec.gaps.extend([0.0] * (n - 1))
            self.last = t
        if b'"error"' in data:
            rec.errors += 1
        if data.endswith(b"\r\n\r\n"):
            tail = self.tail + data if len(data) < 7 else data
            if tail.endswith(b"\r\n0\r\n\r\n") or tail == b"0\r\n\r\n":
                rec.streams += rec.recording
                self._finish(True)
                return
        self.tail = data[-7:]

    def _finish(self, ok: bool) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(ok)
        if not ok and self.transport is not None:
            self.transport.close()


def starts_over(stream_secs: float, spread: float | None) -> float:
    """Seconds to spread the first starts over: one stream's length unless capped.

    Every stream lasts the same, so the phases of the first starts repeat for good: over
    a stream's whole length the streams end and restart evenly; over less, the restarts
    come in waves, each as dense as ``stream_secs / spread`` times the mean start rate.
    """
    return stream_secs if spread is None else min(stream_secs, spread)


class Load:
    """N workers, each holding one connection and streaming back to back."""

    def __init__(self, port: int, dialect: str, streams: int, stream_secs: float) -> None:
        self.port = port
        self.request = request_bytes(dialect, port)
        self.marker = b"}\n" if dialect == "ollama" else b"data:"
        self.rec = Recorder()
        self.running = True
        self.clients: list[Client] = []
        loop = asyncio.get_running_loop()
        # Starts spread over one stream's length, so streams end and restart evenly.
        self.tasks = [
            loop.create_task(self._worker(random.uniform(0, stream_secs))) for _ in range(streams)
        ]

    async def _worker(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(delay)
        while self.running:
            try:
                _, client = await loop.create_connection(
                    lambda: Client(self.rec, self.marker), "127.0.0.1", self.port
                )
            except OSError:
                self.rec.errors += 1
                await asyncio.sleep(0.2)
                continue
            self.clients.append(client)
            self.rec.connects += self.rec.recording
            try:
                while self.running and not client.closed:
                    done: asyncio.Future[bool] = loop.create_future()
                    client.begin(self.request, done)
                    if not await done:
                        await asyncio.sleep(0.05)
                        break
            finally:
                self.clients.remove(client)
                if client.transport is not None:
                    client.transport.close()

    async def stop(self, timeout: float) -> None:
        """Let open streams finish (bounded), then close everything."""
        self.running = False
        _, pending = await asyncio.wait(self.tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.close()
        await asyncio.gather(*pending, return_exceptions=True)


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) seconds of one process (Corral is one process: uvicorn, no workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


async def measure(
    load: Load, secs: float, gw_pid: int | None, backend_pid: int, rss_at: float | None = None
) -> dict[str, Any]:
    """One window: what the clients saw plus CPU of Corral, the backend and this process."""
    rec = load.rec
    rec.reset()
    gw0 = tree_cpu_seconds(gw_pid) if gw_pid else 0.0
    gwu0, gws0 = cpu_split(gw_pid) if gw_pid else (0.0, 0.0)
    be0 = tree_cpu_seconds(backend_pid)
    me0 = time.process_time()
    t0 = time.monotonic()
    rec.recording = True
    rss = None
    if rss_at is not None and gw_pid:
        await asyncio.sleep(secs * rss_at)
        rss = tree_rss_kib(gw_pid)
        await asyncio.sleep(max(0.0, secs - (time.monotonic() - t0)))
    else:
        await asyncio.sleep(secs)
    rec.recording = False
    wall = time.monotonic() - t0
    gw = (tree_cpu_seconds(gw_pid) - gw0) if gw_pid else 0.0
    gwu1, gws1 = cpu_split(gw_pid) if gw_pid else (0.0, 0.0)
    be = tree_cpu_seconds(backend_pid) - be0
    me = time.process_time() - me0
    out: dict[str, Any] = {
        "window": (t0, t0 + wall),
        "secs": round(wall, 3),
        "chunks": rec.chunks,
        "chunks_per_s": rec.chunks / wall,
        "streams_done": rec.streams,
        "open_clients": len(load.clients),
        "connects": rec.connects,
        "errors": rec.errors,
        "ttft_ms": {q: pct(rec.ttfts, q) * 1000 for q in (50, 99)},
        "icd_ms": {q: pct(rec.gaps, q) * 1000 for q in (50, 99, 99.9)},
        "rig_cpu_util": (be + me) / wall,
        "backend_cpu_util": be / wall,
        "client_cpu_util": me / wall,
    }
    if gw_pid:
        out["gw_cpu_s"] = gw
        out["gw_cpu_util"] = gw / wall
        out["gw_cpu_us_per_chunk"] = gw * 1e6 / max(rec.chunks, 1)
        out["gw_user_us_per_chunk"] = (gwu1 - gwu0) * 1e6 / max(rec.chunks, 1)
        out["gw_sys_us_per_chunk"] = (gws1 - gws0) * 1e6 / max(rec.chunks, 1)
    if rss is not None:
        out["rss"] = rss
    return out


# ---- processes -------------------------------------------------------------------


def set_pace(backend_url: str, interval_ms: float) -> None:
    req = urllib.request.Request(
        backend_url + "/bench/pace", data=f"{interval_ms:.3f}".encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def corral_exe() -> str:
    exe = REPO / ".venv" / "bin" / "corral"
    return str(exe) if exe.exists() else (shutil.which("corral") or "corral")


@dataclass
class Rig:
    args: argparse.Namespace
    children: Children = field(default_factory=Children)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="corral-streams-")))

    def __post_init__(self) -> None:
        self.gw_cpus = None if self.args.no_pin else self.args.gateway_cpus
        self.load_cpus = None if self.args.no_pin else self.args.load_cpus

    def start_backend(self) -> None:
        a = self.args
        self.backend_port = free_port()
        cmd = [sys.executable, str(HERE / "stream_backend.py"), "--port", str(self.backend_port)]
        cmd += ["--chunks", str(a.chunks), "--interval-ms", str(a.interval_ms)]
        cmd += ["--first-ms", str(a.first_ms)]
        self.backend = self.children.start(
            pin(cmd, self.load_cpus), log=self.workdir / "backend.log"
        )
        self.backend_url = f"http://127.0.0.1:{self.backend_port}"
        wait_until(
            lambda: b"bench" in http_get(self.backend_url + "/api/tags"),
            15,
            "stream backend",
            lambda: self.backend.poll() is None,
        )

    def start_nginx(self) -> tuple[subprocess.Popen[bytes], int]:
        """nginx as a plain reverse proxy in Corral's place (one process, on the gateway
        core, unbuffered, keep-alive to the backend): what a C proxy costs per chunk on
        this rig, the floor under any gateway's figure (streams_ab.py ``nginx=nginx``)."""
        port = free_port()
        prefix = self.workdir / f"nginx-{port}"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(
            "daemon off; master_process off; worker_processes 1;\n"
            f"error_log {prefix}/error.log warn; pid {prefix}/nginx.pid;\n"
            "events { worker_connections 8192; }\n"
            "http {\n  access_log off;\n"
            f"  upstream backend {{ server 127.0.0.1:{self.backend_port}; keepalive 1024; }}\n"
            f"  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n"
            "    location / {\n      proxy_pass http://backend; proxy_http_version 1.1;\n"
            '      proxy_set_header Connection ""; proxy_buffering off;\n'
            "    }\n  }\n}\n"
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        proc = self.children.start(pin(argv, self.gw_cpus), log=prefix / "out.log")
        self.wait_proxy(proc, port, "nginx")
        return proc, port

    def wait_proxy(self, proc: subprocess.Popen[bytes], port: int, what: str) -> None:
        """Until the proxy on ``port`` relays the backend's model list."""
        wait_until(
            lambda: b"bench" in http_get(f"http://127.0.0.1:{port}/api/tags"),
            self.args.ready_timeout,
            what,
            lambda: proc.poll() is None,
        )

    def start_floor(self) -> tuple[subprocess.Popen[bytes], int]:
        """bench/floor_proxy.py in Corral's place: uvicorn with Corral's stream client and
        direct writes and none of its gateway work, what the Python stack alone costs per
        chunk on this rig (streams_ab.py ``floor=floor``; pass-through cases only)."""
        port = free_port()
        url = f"http://127.0.0.1:{self.backend_port}"
        argv = [sys.executable, str(HERE / "floor_proxy.py"), "--port", str(port)]
        argv += ["--backend", url]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        log = self.workdir / f"floor-{port}.log"
        proc = self.children.start(pin(argv, self.gw_cpus), log=log, cwd=self.workdir, env=env)
        self.wait_proxy(proc, port, "floor proxy")
        return proc, port

    def start_gateway(self, case: Case) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        scheme = "openai+http" if case.backend == "openai" else "http"
        config = self.workdir / f"corral-{case.backend}-{port}.yaml"
        # The store, never the real home's; one per gateway (a journal has one owner).
        data = self.workdir / f"data-{port}"
        config.write_text(
            "backends:\n"
            f"  - url: {scheme}://127.0.0.1:{self.backend_port}\n"
            f"    max_concurrency: {self.args.max_concurrency}\n"
            "limits:\n"
            f"  max_streams: {self.args.max_concurrency}\n"
            "log_level: warning\n"
            f"data_dir: {data}\n" + ("auth:\n  mode: 'on'\n" if self.args.auth else "")
        )
        if self.args.auth:
            KEYS[port] = self.make_key(data)
        argv = [corral_exe(), "serve", "--port", str(port), "--config", str(config)]
        print(f"  starting: {shlex.join(pin(argv, self.gw_cpus))}", flush=True)
        log = self.workdir / f"corral-{case.backend}.log"
        env = None
        if self.args.gc_probe:  # time every collection in the gateway (bench/gcprobe)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (env.get("PYTHONPATH", ""), str(HERE / "gcprobe")) if p
            )
            env["GCPROBE_OUT"] = str(self.workdir / f"gc-{port}.json")
        proc = self.children.start(pin(argv, self.gw_cpus), log=log, cwd=self.workdir, env=env)
        path = "/api/tags" if case.client == "ollama" else "/v1/models"
        headers = {"Authorization": f"Bearer {KEYS[port]}"} if port in KEYS else {}
        try:
            wait_until(
                lambda: b"bench" in http_get(f"http://127.0.0.1:{port}{path}", headers),
                self.args.ready_timeout,
                "corral",
                lambda: proc.poll() is None,
            )
        except RuntimeError:
            print(log.read_text()[-3000:], file=sys.stderr)
            raise
        return proc, port

    def make_key(self, data: Path) -> str:
        """A user with a key and a token budget too large to refuse: the gateway
        authenticates, admits and charges every stream as it goes."""
        key = _cli(data, "users", "create", "bench")
        _cli(data, "quota", "set", "--user", "bench", "--tokens", str(10**15))
        return key


def _cli(data: Path, *argv: str) -> str:
    env = {**os.environ, "CORRAL_DATA_DIR": str(data)}
    done = subprocess.run(
        [corral_exe(), *argv], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


async def one_stream(port: int, dialect: str) -> dict[str, Any]:
    """A single stream, read whole: status, chunk count, whether it ended cleanly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes(dialect, port))
        data = b""
        async with asyncio.timeout(30):
            while not data.endswith(b"\r\n0\r\n\r\n"):
                more = await reader.read(65536)
                if not more:
                    break
                data += more
    finally:
        writer.close()
    marker = b"}\n" if dialect == "ollama" else b"data:"
    end = b'"done":true' if dialect == "ollama" else b"[DONE]"
    return {
        "status": data[:12].decode(errors="replace"),
        "chunks": data.count(marker),
        "clean": end in data and b'"error"' not in data,
        "bytes": len(data),
    }


def gc_pauses(path: Path, results: list[dict[str, Any]]) -> None:
    """Add the gateway's GC pauses inside each result's window (from bench/gcprobe)."""
    try:
        events = json.loads(path.read_text())["events"]
    except (OSError, ValueError, KeyError):
        return
    for r in results:
        t0, t1 = r["window"]
        per: dict[str, Any] = {}
        for gen in (0, 1, 2):
            ms = sorted(e[2] * 1000 for e in events if e[1] == gen and t0 <= e[0] <= t1)
            per[f"gen{gen}"] = {
                "n_per_s": len(ms) / (t1 - t0),
                "p50_ms": pct(ms, 50) if ms else 0.0,
                "max_ms": ms[-1] if ms else 0.0,
                "total_ms_per_s": sum(ms) / (t1 - t0),
            }
        r["gc"] = per


def gc_line(r: dict[str, Any]) -> str:
    g = r.get("gc")
    if not g:
        return ""
    return "  gc " + "  ".join(
        f"g{n}: {v['n_per_s']:.1f}/s p50 {v['p50_ms']:.2f} max {v['max_ms']:.1f} ms"
        for n, v in ((n, g[f"gen{n}"]) for n in (0, 1, 2))
    )


# ---- the benchmark ---------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rig = Rig(args)
        self.stream_secs = (args.first_ms + (args.chunks + 1) * args.interval_ms) / 1000

    def log(self, label: str, r: dict[str, Any]) -> None:
        gw = (
            f"  corral {r['gw_cpu_util'] * 100:5.1f}% {r['gw_cpu_us_per_chunk']:5.1f} µs/chunk"
            f" (usr {r['gw_user_us_per_chunk']:4.1f} sys {r['gw_sys_us_per_chunk']:4.1f})"
            if "gw_cpu_util" in r
            else ""
        )
        print(
            f"  {label:<34} {r['chunks_per_s']:>8.0f} chunks/s  ttft p99 {r['ttft_ms'][99]:7.2f}"
            f"  icd p50 {r['icd_ms'][50]:6.2f} p99 {r['icd_ms'][99]:7.2f} ms{gw}"
            f"  rig {r['rig_cpu_util'] * 100:3.0f}%  conn {r['connects']}  err {r['errors']}",
            flush=True,
        )

    async def paced(
        self,
        port: int,
        dialect: str,
        streams: int,
        interval_ms: float,
        gw_pid: int | None,
        label: str = "",
    ) -> dict[str, Any]:
        """Start N streams at a pace, warm up, measure one window, drain."""
        a = self.args
        set_pace(self.rig.backend_url, interval_ms)
        secs = (a.first_ms + (a.chunks + 1) * interval_ms) / 1000
        spread = starts_over(secs, a.spread)
        load = Load(port, dialect, streams, spread)
        try:
            await asyncio.sleep(spread + a.warmup)
            spy = self.py_spy(gw_pid, label) if label and a.py_spy else None
            try:
                return await measure(load, a.duration, gw_pid, self.rig.backend.pid, rss_at=0.5)
            finally:
                if spy is not None:
                    await asyncio.to_thread(spy.wait, a.duration + 30)
        finally:
            await load.stop(secs + 5)

    def py_spy(self, pid: int | None, label: str) -> subprocess.Popen[bytes] | None:
        """Sample Corral during this window (py-spy on the load core; it slows Corral a bit)."""
        exe = REPO / ".venv" / "bin" / "py-spy"
        if pid is None or not exe.exists():
            return None
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"py-spy-{label}.txt"
        cmd = [str(exe), "record", "--pid", str(pid), "--duration", str(int(self.args.duration))]
        cmd += ["--rate", "250", "--format", "raw", "--nonblocking", "-o", str(out)]
        print(f"  py-spy -> {out}", flush=True)
        return self.rig.children.start(pin(cmd, self.rig.load_cpus), log=out.with_suffix(".log"))

    async def ramp(
        self, port: int, dialect: str, gw_pid: int, start_rate: float, per_stream: int
    ) -> dict[str, Any]:
        """1,000 streams held open; shorten the interval step by step until Corral's core
        is saturated. Returns every step and the best sustained chunks/s."""
        a = self.args
        n = a.ramp_streams
        rate = max(start_rate, n / (a.interval_ms * 4 / 1000))
        interval = n / rate * 1000
        set_pace(self.rig.backend_url, interval)
        secs = (a.first_ms + (a.chunks + 1) * interval) / 1000
        spread = starts_over(secs, a.spread)
        load = Load(port, dialect, n, spread)
        steps: list[dict[str, Any]] = []
        try:
            await asyncio.sleep(spread + a.warmup)
            for _ in range(a.ramp_steps):
                interval = n / rate * 1000
                set_pace(self.rig.backend_url, interval)
                await asyncio.sleep(a.ramp_settle)
                r = await measure(load, a.ramp_window, gw_pid, self.rig.backend.pid)
                r["streams"] = n
                r["interval_ms"] = interval
                # What the backend sends if nobody falls behind (restarts not counted).
                length = a.first_ms + (a.chunks + 1) * interval
                r["offered_chunks_per_s"] = n * per_stream / length * 1000
                r["kept_up"] = r["chunks_per_s"] / r["offered_chunks_per_s"]
                steps.append(r)
                self.log(f"ramp {n} @ {interval:.2f} ms", r)
                if r["gw_cpu_util"] >= a.saturated or r["rig_cpu_util"] >= 0.95:
                    break
                if r["kept_up"] < 0.85:
                    break  # something else is the bottleneck (a shared core?): stop here
                # Aim at the rate that would fill the core, but never more than 1.6x at once.
                fill = r["chunks_per_s"] / max(r["gw_cpu_util"], 0.05)
                rate = min(max(rate * 1.15, fill * 1.05), rate * 1.6)
        finally:
            await load.stop(secs + 5)
        best = max(steps, key=lambda s: s["chunks_per_s"])
        sat = [s for s in steps if s["gw_cpu_util"] >= a.saturated]
        return {
            "steps": steps,
            "sustained_chunks_per_s": best["chunks_per_s"],
            "at_gw_cpu_util": best["gw_cpu_util"],
            "saturated": bool(sat),
            "rig_limited": any(s["rig_cpu_util"] >= 0.95 for s in steps) and not sat,
            "kept_up_at_best": best["kept_up"],
            "gw_cpu_us_per_chunk_at_saturation": best["gw_cpu_us_per_chunk"],
        }

    async def run_case(self, case: Case) -> dict[str, Any]:
        a = self.args
        rig = self.rig
        print(f"\n== {case.name}: {case.client} client → {case.backend} backend", flush=True)
        proc, port = rig.start_gateway(case)
        out: dict[str, Any] = {"client": case.client, "backend": case.backend}
        try:
            out["rss_idle"] = tree_rss_kib(proc.pid)
            set_pace(rig.backend_url, a.interval_ms)
            direct_direct = await one_stream(rig.backend_port, case.backend)
            via = await one_stream(port, case.client)
            out["check"] = {"direct": direct_direct, "via": via}
            if not via["clean"] or not via["status"].endswith("200"):
                raise RuntimeError(f"{case.name}: a stream through Corral failed: {via}")
            print(f"  check: direct {direct_direct['chunks']} chunks, via {via['chunks']}")
            levels: dict[str, Any] = {}
            for n in a.levels:
                levels[str(n)] = {}
                for side in ("direct", "via"):
                    target = rig.backend_port if side == "direct" else port
                    dialect = case.backend if side == "direct" else case.client
                    r = await self.paced(
                        target, dialect, n, a.interval_ms, proc.pid if side == "via" else None
                    )
                    r["interval_ms"] = a.interval_ms
                    levels[str(n)][side] = r
                    self.log(f"{n} streams @ {a.interval_ms:g} ms {side}", r)
            out["levels"] = levels
            # Where to start the ramp: what the lightest level says the core could do.
            first = levels[str(a.levels[0])]["via"]
            start = 0.5 * first["chunks_per_s"] / max(first["gw_cpu_util"], 0.01)
            out["ramp"] = ramp = await self.ramp(port, case.client, proc.pid, start, via["chunks"])
            rate = ramp["sustained_chunks_per_s"] * a.fraction
            interval = a.ramp_streams / rate * 1000
            key = f"{a.ramp_streams}@{a.fraction:g}x"
            out["at_fraction"] = {"interval_ms": interval, "key": key}
            for side in ("direct", "via"):
                target = rig.backend_port if side == "direct" else port
                dialect = case.backend if side == "direct" else case.client
                r = await self.paced(
                    target,
                    dialect,
                    a.ramp_streams,
                    interval,
                    proc.pid if side == "via" else None,
                    label=case.name.replace("→", "-to-") if side == "via" else "",
                )
                r["interval_ms"] = interval
                out["at_fraction"][side] = r
                self.log(f"{a.ramp_streams} streams @ {interval:.2f} ms {side}", r)
            out["rss_after"] = tree_rss_kib(proc.pid)
            out["alive_after"] = proc.poll() is None
        finally:
            rig.children.stop(proc)
        return out

    async def run(self) -> dict[str, Any]:
        started = time.time()
        self.rig.start_backend()
        try:
            cases = {c: await self.run_case(CASES[c]) for c in self.args.cases}
        finally:
            self.rig.children.stop_all()
            shutil.rmtree(self.rig.workdir, ignore_errors=True)
        a = self.args
        return {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - started, 1),
            "argv": sys.argv,
            "machine": machine_facts(),
            "git": git_state(REPO),
            "settings": {
                k: getattr(a, k)
                for k in (
                    "chunks",
                    "interval_ms",
                    "first_ms",
                    "levels",
                    "ramp_streams",
                    "fraction",
                    "duration",
                    "warmup",
                    "spread",
                    "ramp_window",
                    "max_concurrency",
                    "gateway_cpus",
                    "load_cpus",
                    "no_pin",
                )
            },
            "cases": cases,
        }


# ---- reporting -------------------------------------------------------------------


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, c in res["cases"].items():
        translated = c["client"] != c["backend"]
        rows = []
        runs = [(f"{n} streams", lv) for n, lv in c["levels"].items()]
        runs.append((f"{res['settings']['ramp_streams']} streams", c["at_fraction"]))
        for label, lv in runs:
            d, v = lv["direct"], lv["via"]
            rows.append(
                {
                    "label": label,
                    "interval_ms": v["interval_ms"],
                    "chunks_per_s": v["chunks_per_s"],
                    "ttft_p99_direct": d["ttft_ms"][99],
                    "ttft_p99_via": v["ttft_ms"][99],
                    "ttft_p99_added": v["ttft_ms"][99] - d["ttft_ms"][99],
                    "icd_p99_direct": d["icd_ms"][99],
                    "icd_p99_via": v["icd_ms"][99],
                    "icd_p99_added": v["icd_ms"][99] - d["icd_ms"][99],
                    "gw_cpu_util": v["gw_cpu_util"],
                    "us_per_chunk": v["gw_cpu_us_per_chunk"],
                    "rig_cpu_util": max(d["rig_cpu_util"], v["rig_cpu_util"]),
                    "rss_mib": v["rss"]["rss_kib"] / 1024 if "rss" in v else None,
                    "open_clients": v["open_clients"],
                    "errors": d["errors"] + v["errors"],
                }
            )
        ramp = c["ramp"]
        limit = CPU_US_TRANSLATE if translated else CPU_US_PASS
        big = rows[-1]
        summary[name] = {
            "translated": translated,
            "rows": rows,
            "sustained_chunks_per_s": ramp["sustained_chunks_per_s"],
            "sustained_at_gw_cpu_util": ramp["at_gw_cpu_util"],
            "saturated": ramp["saturated"],
            "rig_limited": ramp["rig_limited"],
            "us_per_chunk_first_level": rows[0]["us_per_chunk"],
            "us_per_chunk_big": big["us_per_chunk"],
            "us_per_chunk_saturated": ramp["gw_cpu_us_per_chunk_at_saturation"],
            "cpu_target_us": limit,
            "pass": {
                "cpu_first_level": rows[0]["us_per_chunk"] <= limit,
                "cpu_big": big["us_per_chunk"] <= limit,
                "cpu_saturated": ramp["gw_cpu_us_per_chunk_at_saturation"] <= limit,
                "big_icd_p99": big["icd_p99_added"] <= ADDED_ICD_P99_MS and big["errors"] == 0,
            },
        }
    return summary


def _f(v: float | None, nd: int = 2) -> str:
    if v is None:
        return ""
    return f"{v:.{nd}f}" if abs(v) < 100 else f"{v:.0f}"


def markdown(res: dict[str, Any], summary: dict[str, Any]) -> str:
    st = res["settings"]
    lines = [
        f"Streams of {st['chunks']} chunks; {st['duration']:g} s windows; "
        f"Corral on CPU {st['gateway_cpus']}, backend + client on CPU {st['load_cpus']}; "
        f"{res['when']} (git {res['git']['commit']}"
        f"{', corral/ dirty' if res['git']['corral_dirty'] else ''}).",
        "",
        "| case | streams @ interval | chunks/s | TTFT p99 ms direct / via / **added** "
        "| inter-chunk p99 ms direct / via / **added** | Corral CPU | µs/chunk "
        "(= CPU ms per 1,000 chunks) | RSS MiB | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        for r in s["rows"]:
            lines.append(
                f"| {name} | {r['label']} @ {r['interval_ms']:.1f} ms | {r['chunks_per_s']:.0f} "
                f"| {_f(r['ttft_p99_direct'])} / {_f(r['ttft_p99_via'])} / "
                f"**{_f(r['ttft_p99_added'])}** "
                f"| {_f(r['icd_p99_direct'])} / {_f(r['icd_p99_via'])} / "
                f"**{_f(r['icd_p99_added'])}** "
                f"| {r['gw_cpu_util'] * 100:.0f}% | {r['us_per_chunk']:.1f} "
                f"| {_f(r['rss_mib'], 0)} | {r['errors']} |"
            )
    first = summary[next(iter(summary))]["rows"]
    small, big = first[0]["label"], first[-1]["label"]

    def ok(flag: bool) -> str:
        return "✓" if flag else "✗"

    lines += [
        "",
        f"| case | sustained chunks/s (Corral CPU) | µs/chunk: {small} / {big} / saturated "
        f"| CPU target | {big}: added inter-chunk p99 ≤ 10 ms |",
        "|---|---:|---:|---:|---|",
    ]
    for name, s in summary.items():
        p = s["pass"]
        note = "" if s["saturated"] else (" rig-limited" if s["rig_limited"] else " not saturated")
        lines.append(
            f"| {name} | {s['sustained_chunks_per_s']:.0f} "
            f"({s['sustained_at_gw_cpu_util'] * 100:.0f}%{note}) "
            f"| {s['us_per_chunk_first_level']:.1f} {ok(p['cpu_first_level'])} / "
            f"{s['us_per_chunk_big']:.1f} {ok(p['cpu_big'])} / "
            f"{s['us_per_chunk_saturated']:.1f} {ok(p['cpu_saturated'])} "
            f"| ≤ {s['cpu_target_us']:.0f} µs "
            f"| {'PASS' if p['big_icd_p99'] else 'FAIL'} ({s['rows'][-1]['icd_p99_added']:.2f}) |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--cases",
        default="ollama-pass,openai-pass,openai→ollama,ollama→openai",
        help="comma list; a,b,c,d or names (openai-ollama for openai→ollama)",
    )
    ap.add_argument("--levels", default="100", help="paced stream counts at --interval-ms")
    ap.add_argument("--chunks", type=int, default=50, help="content chunks per stream")
    ap.add_argument("--interval-ms", type=float, default=20.0)
    ap.add_argument("--first-ms", type=float, default=20.0, help="backend's time to first chunk")
    ap.add_argument("--ramp-streams", type=int, default=1000, help="open streams in the ramp")
    ap.add_argument("--ramp-steps", type=int, default=7)
    ap.add_argument("--ramp-window", type=float, default=2.5, help="seconds per ramp step")
    ap.add_argument("--ramp-settle", type=float, default=0.7)
    ap.add_argument("--saturated", type=float, default=0.95, help="Corral CPU share = saturated")
    ap.add_argument(
        "--fraction", type=float, default=0.8, help="1,000-stream paced run: share of sustained"
    )
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per measured window")
    ap.add_argument("--warmup", type=float, default=0.5, help="extra seconds after the starts")
    ap.add_argument(
        "--spread",
        type=float,
        default=None,
        help="spread the starts over at most this many s (default: one stream's length, so "
        "streams end and restart evenly; shorter bunches the restarts into waves)",
    )
    ap.add_argument("--py-spy", action="store_true", help="profile Corral in the big via run")
    ap.add_argument("--gc-probe", action="store_true", help="time Corral's GC pauses per window")
    ap.add_argument("--quick", action="store_true", help="short windows: under 90 s")
    ap.add_argument("--max-concurrency", type=int, default=2000)
    ap.add_argument("--gateway-cpus", default="0")
    ap.add_argument("--load-cpus", default="1", help="CPUs of the backend and the clients")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument(
        "--auth",
        action="store_true",
        help="API keys on, with a token budget: every stream is admitted and charged as it goes",
    )
    ap.add_argument("--ready-timeout", type=float, default=30.0)
    ap.add_argument("--max-seconds", type=float, default=0, help="hard stop (default 2x plan)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.quick:  # half-length streams, short windows
        args.duration, args.warmup, args.ramp_window = 1.2, 0.2, 1.0
        args.ramp_settle, args.ramp_steps, args.spread = 0.3, 4, 0.8
        if "--chunks" not in (argv if argv is not None else sys.argv):
            args.chunks = 25
    names = [CASE_ALIASES.get(c.strip(), c.strip()) for c in args.cases.split(",") if c.strip()]
    if unknown := [c for c in names if c not in CASES]:
        ap.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    args.cases = names
    args.levels = [int(x) for x in args.levels.split(",") if x]
    if not args.max_seconds:
        args.max_seconds = 180 if args.quick else 420
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_pin:
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(0, {int(c) for c in args.load_cpus.split(",")})

    def too_long(signum: int, frame: object) -> None:
        raise SystemExit(f"streams.py: over --max-seconds={args.max_seconds:.0f}; stopped")

    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(int(args.max_seconds))
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    try:
        res = (uvloop.run if uvloop is not None else asyncio.run)(Bench(args).run())
    finally:
        signal.alarm(0)
    res["summary"] = summarize(res)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}-streams{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(res, indent=1, ensure_ascii=False))
    print()
    print(markdown(res, res["summary"]))
    print(f"\nJSON: {out}  ({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
