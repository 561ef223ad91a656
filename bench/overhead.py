"""Hot-path overhead benchmark: the same wrk load sent directly to a zero-delay nginx
backend and through a gateway, reporting what the gateway adds.

    .venv/bin/python bench/overhead.py                   # Corral: corral serve --backend ...
    .venv/bin/python bench/overhead.py --quick           # ~3 s per wrk run
    .venv/bin/python bench/overhead.py --name X --target-cmd "CMD --port {port} --backend {backend}"
    .venv/bin/python bench/overhead.py --litellm         # LiteLLM's proxy, if installed

Layout (2 cores): the gateway is pinned to core 0; nginx and wrk share core 1. For each
mode (non-streamed, streamed) the gateway is started against the matching nginx port,
checked (GET /api/tags lists bench:latest, one POST matches the direct reply), warmed
up, then measured with wrk: 1 connection, 64 connections at peak, and 64 connections
paced at a fixed rate (a fraction of the gateway's measured peak). Direct and gateway
runs alternate; every figure is the median over --repeat runs. Results: a Markdown
table on stdout and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import NginxBackend
from procs import (
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
WRK = HERE / "wrk"
RESULTS = HERE / "results"
LITELLM_KEY = "sk-corral-bench"

SCRIPTS = {
    ("ollama", "chat"): "chat.lua",
    ("ollama", "generate"): "generate.lua",
    ("openai", "chat"): "openai_chat.lua",
}
MODES = {"nonstream": False, "stream": True}

LITELLM_CONFIG = """\
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench:latest
      api_base: {backend}/v1
      api_key: none
litellm_settings:
  drop_params: true
  telemetry: false
general_settings:
  master_key: {key}
"""


@dataclass
class Target:
    name: str
    argv: list[str]  # with {port} and {backend} placeholders
    api: str  # "ollama" | "openai"
    env: dict[str, str]
    cwd: Path
    auth: str | None = None


def _cli(exe: str, env: dict[str, str], *args: str) -> str:
    made = subprocess.run(
        [exe, *args], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return made.stdout.strip()


def corral_target(
    max_concurrency: int | None, api: str = "ollama", auth: bool = False, limits: bool = False
) -> Target:
    exe = REPO / ".venv" / "bin" / "corral"
    exe_s = str(exe) if exe.exists() else (shutil.which("corral") or "corral")
    argv = [exe_s, "serve", "--port", "{port}", "--log-level", "warning"]
    cwd = Path(tempfile.mkdtemp(prefix="corral-bench-gw-"))
    # The gateway's database and secret live in the temp dir, never the real home's.
    env = {"CORRAL_DATA_DIR": str(cwd)}
    key = None
    if limits:  # every limit on, none reached: the admit stage's whole path each request
        _cli(exe_s, env, "users", "create", "bench", "--no-key", "--max-concurrent", "100000")
        key = _cli(
            exe_s,
            env,
            "keys",
            "create",
            "--user",
            "bench",
            "--rpm",
            "100000000",
            "--tpm",
            "1000000000",
        )
        _cli(exe_s, env, "quota", "set", "--user", "bench", "--tokens", "1000000000000")
        env["CORRAL_AUTH__MODE"] = "on"
    elif auth:  # API keys on: one user's key, made with the CLI, sent by wrk (BENCH_AUTH)
        key = _cli(exe_s, env, "users", "create", "bench")
        env["CORRAL_AUTH__MODE"] = "on"
    suffix = "-limits" if limits else ("-auth" if auth else "")
    if max_concurrency is None:  # as shipped: --backend URL (4 slots for an Ollama backend)
        return Target(f"corral{suffix}", [*argv, "--backend", "{backend}"], api, env, cwd, key)
    env["CORRAL_BACKENDS"] = json.dumps([{"url": "{backend}", "max_concurrency": max_concurrency}])
    return Target(f"corral-slots{max_concurrency}{suffix}", argv, api, env, cwd, key)


def fill(text: str, port: int, backend: str) -> str:
    return text.replace("{port}", str(port)).replace("{backend}", backend)


def litellm_target(args: argparse.Namespace) -> Target:
    exe = args.litellm_bin or shutil.which("litellm")
    if not exe or not Path(exe).exists():
        sys.exit(
            "LiteLLM is not installed (optional, never in CI). Install it in its own venv:\n"
            "  python -m venv /tmp/litellm-venv\n"
            "  /tmp/litellm-venv/bin/pip install 'litellm[proxy]==1.106.2'\n"
            "then: bench/overhead.py --litellm --litellm-bin /tmp/litellm-venv/bin/litellm"
        )
    workdir = Path(tempfile.mkdtemp(prefix="corral-bench-litellm-"))
    argv = [exe, "--config", str(workdir / "config.yaml"), "--host", "127.0.0.1"]
    argv += ["--port", "{port}", "--num_workers", "1", "--telemetry", "False"]
    env = {
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    return Target("litellm", argv, "openai", env, workdir, auth=LITELLM_KEY)


# ---- measuring -------------------------------------------------------------------


def run_wrk(
    url: str, script: Path, conns: int, secs: float, env: dict[str, str], cpus: str | None
) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(secs))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(
        pin(cmd, cpus),
        capture_output=True,
        text=True,
        timeout=secs + 60,
        env={**os.environ, "BENCH_THREADS": "1", "BENCH_CONNS": str(conns), **env},
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            result["errors_total"] = sum(result["errors"].values())
            return result
    raise RuntimeError(f"wrk printed no result (rc={out.returncode}): {out.stderr or out.stdout}")


def post(url: str, path: str, body: bytes, auth: str | None) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def request_body(api: str, endpoint: str, stream: bool) -> tuple[str, bytes]:
    name = {"ollama": f"ollama_{endpoint}", "openai": "openai_chat"}[api]
    path = {"ollama": f"/api/{endpoint}", "openai": "/v1/chat/completions"}[api]
    body = (WRK / "bodies" / f"{name}.json").read_bytes()
    if stream:
        body = body.replace(b'"stream":false', b'"stream":true', 1)
    return path, body


def median_of(runs: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


class Bench:
    def __init__(self, args: argparse.Namespace, target: Target) -> None:
        self.args = args
        self.target = target
        self.children = Children()
        self.gw_cpus = None if args.no_pin else args.gateway_cpus
        self.load_cpus = None if args.no_pin else args.load_cpus
        self.script = WRK / SCRIPTS[(target.api, args.endpoint)]
        self.logs = Path(tempfile.mkdtemp(prefix="corral-bench-logs-"))

    def wrk(
        self, url: str, conns: int, secs: float, stream: bool, rate: float = 0
    ) -> dict[str, Any]:
        env = {"BENCH_STREAM": "1" if stream else "0", "BENCH_RATE": f"{rate:.1f}"}
        if self.target.auth:
            env["BENCH_AUTH"] = self.target.auth
        return run_wrk(url, self.script, conns, secs, env, self.load_cpus)

    def start_target(self, backend_url: str, label: str) -> tuple[subprocess.Popen[bytes], str]:
        t = self.target
        port = free_port()
        if t.name == "litellm":
            (t.cwd / "config.yaml").write_text(
                LITELLM_CONFIG.format(backend=backend_url, key=LITELLM_KEY)
            )
        argv = [fill(a, port, backend_url) for a in t.argv]
        env = {k: fill(v, port, backend_url) for k, v in t.env.items()}
        log = self.logs / f"{t.name}-{label}.log"
        print(f"  starting: {shlex.join(pin(argv, self.gw_cpus))}", flush=True)
        proc = self.children.start(
            pin(argv, self.gw_cpus), log=log, cwd=t.cwd, env={**os.environ, **env}
        )
        url = f"http://127.0.0.1:{port}"
        auth_headers = {"Authorization": f"Bearer {t.auth}"} if t.auth else {}
        ready_path = "/api/tags" if t.api == "ollama" else "/v1/models"
        try:
            waited = wait_until(
                lambda: b"bench" in http_get(url + ready_path, auth_headers),
                self.args.ready_timeout,
                t.name,
                lambda: proc.poll() is None,
            )
        except RuntimeError:
            print(log.read_text()[-3000:], file=sys.stderr)
            raise
        print(f"  ready after {waited:.2f}s (GET {ready_path} lists bench)", flush=True)
        return proc, url

    def check(self, direct: str, via: str, stream: bool) -> dict[str, Any]:
        path, body = request_body(self.target.api, self.args.endpoint, stream)
        d_status, d_body = post(direct, path, body, None)
        g_status, g_body = post(via, path, body, self.target.auth)
        same = d_status == g_status and d_body == g_body
        check = {
            "status": g_status,
            "bytes": len(g_body),
            "direct_bytes": len(d_body),
            "body_identical": same,
        }
        if g_status != 200:
            raise RuntimeError(
                f"{path} through {self.target.name}: HTTP {g_status} {g_body[:300]!r}"
            )
        if not same:
            print(
                f"  note: reply differs from the backend's ({len(g_body)} vs {len(d_body)} bytes)"
            )
        return check

    def run_mode(self, backend: NginxBackend, mode: str) -> dict[str, Any]:
        a = self.args
        stream = MODES[mode]
        direct = backend.stream_url if stream else backend.url
        print(f"\n== {mode}: backend {direct}", flush=True)
        proc, via = self.start_target(direct, mode)
        out: dict[str, Any] = {"backend": direct, "rss_idle": tree_rss_kib(proc.pid)}
        out["check"] = self.check(direct, via, stream)
        self.wrk(via, a.connections, a.warmup, stream)  # warm pools, caches, JIT-less paths
        self.wrk(direct, a.connections, a.warmup, stream)

        def measure(key: str, conns: int, rate: float = 0) -> None:
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "target": []}
            for rep in range(a.repeat):
                for side, url in (("direct", direct), ("target", via)):
                    cpu0 = tree_cpu_seconds(proc.pid)
                    r = self.wrk(url, conns, a.duration, stream, rate)
                    if side == "target":
                        r["target_cpu_us_per_req"] = (
                            (tree_cpu_seconds(proc.pid) - cpu0) * 1e6 / max(r["requests"], 1)
                        )
                    runs[side].append(r)
                    lat = r["latency_us"]
                    print(
                        f"  {key:<10} {side:<6} #{rep + 1}: {r['rps']:>9.0f} req/s"
                        f"  p50 {lat['p50'] / 1000:7.3f} ms  p99 {lat['p99'] / 1000:7.3f} ms"
                        f"  errors {r['errors_total']}",
                        flush=True,
                    )
            out[key] = runs

        measure("c1", 1)
        measure("peak", a.connections)
        peak = median_of(out["peak"]["target"], "rps")
        rate = a.rate or max(1.0, round(peak * a.rate_fraction))
        out["paced_rate"] = rate
        measure("paced", a.connections, rate)
        out["rss_after"] = tree_rss_kib(proc.pid)
        out["alive_after"] = proc.poll() is None
        self.children.stop(proc)
        return out

    def run(self) -> dict[str, Any]:
        a = self.args
        backend = NginxBackend(self.children, self.load_cpus, use_echo=not a.no_echo)
        started = time.time()
        try:
            backend.start()
            results = {m: self.run_mode(backend, m) for m in a.modes}
        except BaseException:
            print(f"target logs kept in {self.logs}", file=sys.stderr)
            raise
        else:
            shutil.rmtree(self.logs, ignore_errors=True)
        finally:
            self.children.stop_all()
            backend.stop()
            if self.target.cwd.name.startswith("corral-bench-"):  # a temp dir we made
                shutil.rmtree(self.target.cwd, ignore_errors=True)
        return {
            "name": self.target.name,
            "argv": self.target.argv,
            "api": self.target.api,
            "endpoint": a.endpoint,
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - started, 1),
            "machine": machine(),
            "git": git_state(REPO),
            "settings": {
                k: getattr(a, k)
                for k in ("duration", "warmup", "repeat", "connections", "rate_fraction", "rate")
            }
            | {
                "gateway_cpus": self.gw_cpus,
                "load_cpus": self.load_cpus,
                "stream_framing": "one HTTP chunk per line (nginx echo + echo_flush)"
                if backend.streams_per_line
                else "all lines in one chunked write",
            },
            "modes": results,
        }


def machine() -> dict[str, Any]:
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        **machine_facts(),
        "wrk": (wrk_v.stdout or wrk_v.stderr).splitlines()[0] if wrk_v else "?",
    }


# ---- reporting -------------------------------------------------------------------

TARGETS = {"c1_p50_ms": 1.0, "c1_p99_ms": 3.0, "c64_p99_ms": 30.0}


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Medians per scenario and the added latency (target minus direct)."""
    summary: dict[str, Any] = {}
    for mode, m in res["modes"].items():
        s: dict[str, Any] = {}
        for key in ("c1", "peak", "paced"):
            for side in ("direct", "target"):
                runs = m[key][side]
                s[f"{key}_{side}"] = {
                    "rps": median_of(runs, "rps"),
                    "p50_ms": median_of(runs, "latency_us", "p50") / 1000,
                    "p99_ms": median_of(runs, "latency_us", "p99") / 1000,
                    "p99_co_ms": median_of(runs, "latency_co_us", "p99") / 1000,
                    "errors": sum(r["errors_total"] for r in runs),
                }
            s[f"{key}_added_p50_ms"] = s[f"{key}_target"]["p50_ms"] - s[f"{key}_direct"]["p50_ms"]
            s[f"{key}_added_p99_ms"] = s[f"{key}_target"]["p99_ms"] - s[f"{key}_direct"]["p99_ms"]
            s[f"{key}_cpu_us_per_req"] = median_of(m[key]["target"], "target_cpu_us_per_req")
        s["paced_rate"] = m["paced_rate"]
        s["rss_idle_mib"] = m["rss_idle"]["rss_kib"] / 1024
        s["rss_after_mib"] = m["rss_after"]["rss_kib"] / 1024
        s["rss_peak_mib"] = m["rss_after"]["hwm_kib"] / 1024
        s["errors"] = sum(s[f"{k}_target"]["errors"] for k in ("c1", "peak", "paced"))
        s["pass"] = {
            "c1_p50": s["c1_added_p50_ms"] <= TARGETS["c1_p50_ms"],
            "c1_p99": s["c1_added_p99_ms"] <= TARGETS["c1_p99_ms"],
            "c64_paced_p99": s["paced_added_p99_ms"] <= TARGETS["c64_p99_ms"] and s["errors"] == 0,
        }
        summary[mode] = s
    return summary


def _ms(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def mode_rows(s: dict[str, Any], conns: int) -> list[tuple[str, ...]]:
    """Table rows for one mode: scenario, direct, via target, added, target CPU µs/req."""

    def lat(key: str, q: str, with_cpu: bool = False) -> tuple[str, ...]:
        d, t = s[f"{key}_direct"][f"{q}_ms"], s[f"{key}_target"][f"{q}_ms"]
        cpu = f"{s[f'{key}_cpu_us_per_req']:.0f}" if with_cpu else ""
        return _ms(d), _ms(t), _ms(s[f"{key}_added_{q}_ms"]), cpu

    def co(key: str) -> tuple[str, ...]:
        d, t = s[f"{key}_direct"]["p99_co_ms"], s[f"{key}_target"]["p99_co_ms"]
        return _ms(d), _ms(t), _ms(t - d), ""

    def rps(key: str, with_cpu: bool = False) -> tuple[str, ...]:
        cpu = f"{s[f'{key}_cpu_us_per_req']:.0f}" if with_cpu else ""
        return f"{s[f'{key}_direct']['rps']:.0f}", f"{s[f'{key}_target']['rps']:.0f}", "", cpu

    at = f"{conns} conn @ {s['paced_rate']:.0f} req/s"
    errors_direct = sum(s[f"{k}_direct"]["errors"] for k in ("c1", "peak", "paced"))
    rss = f"{s['rss_idle_mib']:.0f} / {s['rss_after_mib']:.0f} / {s['rss_peak_mib']:.0f}"
    return [
        ("1 conn p50 ms", *lat("c1", "p50", True)),
        ("1 conn p99 ms", *lat("c1", "p99")),
        ("1 conn p99 ms, wrk CO-corrected", *co("c1")),
        ("1 conn req/s", *rps("c1")),
        (f"{conns} conn peak req/s", *rps("peak", True)),
        (f"{conns} conn peak p99 ms", *lat("peak", "p99")),
        (f"{at}: p50 ms", *lat("paced", "p50", True)),
        (f"{at}: p99 ms", *lat("paced", "p99")),
        (f"{at}: achieved req/s", *rps("paced")),
        ("errors (all runs)", str(errors_direct), str(s["errors"]), "", ""),
        ("RSS MiB idle / after / peak", "", rss, "", ""),
    ]


def markdown(res: dict[str, Any], summary: dict[str, Any]) -> str:
    name, settings = res["name"], res["settings"]
    lines = [
        f"### {name} — {res['api']} /{res['endpoint']}, wrk {settings['duration']:g} s "
        f"x {settings['repeat']} (median), {res['when']}",
        "",
        f"| mode | scenario | direct | via {name} | added | {name} CPU µs/req |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for mode, s in summary.items():
        for row in mode_rows(s, settings["connections"]):
            lines.append(f"| {mode} | " + " | ".join(row) + " |")
    lines.append("")
    for mode, s in summary.items():
        verdict = ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in s["pass"].items())
        lines.append(
            f"- {mode}: targets (added 1-conn p50 ≤ 1 ms, p99 ≤ 3 ms; paced "
            f"{settings['connections']}-conn p99 ≤ 30 ms, zero errors): {verdict}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--target-cmd", help="any proxy command; {port} and {backend} are filled in")
    who.add_argument("--litellm", action="store_true", help="LiteLLM proxy (optional, never CI)")
    ap.add_argument("--name", help="label for the target (default: corral / litellm / custom)")
    ap.add_argument(
        "--api",
        choices=["ollama", "openai"],
        help="dialect to send (default ollama; litellm: openai)",
    )
    ap.add_argument("--endpoint", choices=["chat", "generate"], default="chat")
    ap.add_argument("--litellm-bin", help="path to the litellm executable")
    ap.add_argument(
        "--corral-slots",
        type=int,
        help="Corral only: backend max_concurrency (default: as shipped, 4 for Ollama)",
    )
    ap.add_argument(
        "--auth", action="store_true", help="Corral with API keys on (a key made by the CLI)"
    )
    ap.add_argument(
        "--limits",
        action="store_true",
        help="Corral with API keys and every limit on (rpm, tpm, concurrency, budget; none "
        "reached), the usage journal on as shipped",
    )
    ap.add_argument("--modes", default="nonstream,stream", help="nonstream,stream")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per side")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration (median)")
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up, 1 repeat")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rate-fraction", type=float, default=0.5, help="paced rate / gateway peak")
    ap.add_argument("--rate", type=float, default=0.0, help="fixed paced rate (overrides fraction)")
    ap.add_argument("--gateway-cpus", default="0")
    ap.add_argument("--load-cpus", default="1", help="CPUs for nginx and wrk")
    ap.add_argument("--no-pin", action="store_true", help="don't use taskset")
    ap.add_argument("--no-echo", action="store_true", help="stream in one write, not per line")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument("--out", type=Path, help="JSON result path (default bench/results/...)")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3, 1
        if "--repeat" not in (argv if argv is not None else sys.argv):
            args.repeat = 1
    args.modes = [m for m in args.modes.split(",") if m]
    if unknown := set(args.modes) - set(MODES):
        ap.error(f"unknown modes {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.target_cmd:
        target = Target(args.name or "custom", shlex.split(args.target_cmd), args.api or "ollama",
                        {}, Path.cwd())  # fmt: skip
    elif args.litellm:
        target = litellm_target(args)
    else:
        target = corral_target(
            args.corral_slots, args.api or "ollama", auth=args.auth, limits=args.limits
        )
    if args.name:
        target.name = args.name
    if not shutil.which("wrk") or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        sys.exit("needs wrk and nginx (apt-get install wrk nginx)")
    res = Bench(args, target).run()
    res["summary"] = summarize(res)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}-{target.name}.json"
    out.write_text(json.dumps(res, indent=1))
    print()
    print(markdown(res, res["summary"]))
    print(f"\nJSON: {out}  ({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
