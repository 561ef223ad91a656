"""Run every library candidate through the overhead harness and tabulate the medians.

    .venv/bin/python bench/choices/run.py [--repeat 2] [--duration 10] [--only NAME ...]

Each candidate is a ~50-line reverse proxy with the same behaviour (read the JSON body,
parse it once with msgspec, forward the bytes over a pooled keep-alive client, relay
the reply chunk by chunk). Results land in bench/results/choices-*.json and a Markdown
table is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
VENV_BIN = Path(sys.executable).parent
PY = sys.executable
GRANIAN = (
    f"env CHOICE_BACKEND={{backend}} {VENV_BIN / 'granian'} --host 127.0.0.1 --port {{port}}"
    f" --workers 1 --runtime-threads 1 --loop uvloop --no-ws --log-level warning"
    f" --working-dir {HERE}"
)


def script(name: str, *extra: str) -> str:
    return " ".join([PY, str(HERE / name), "--port {port} --backend {backend}", *extra])


CANDIDATES = {
    "uvicorn+raw-asgi+aiohttp": script("asgi_raw_aiohttp.py"),
    "uvicorn+raw-asgi+aiohttp+watch": script("asgi_raw_aiohttp.py", "--watch-disconnect"),
    "uvicorn+raw-asgi+httpx": script("asgi_raw_httpx.py"),
    "uvicorn+starlette+aiohttp": script("starlette_aiohttp.py"),
    "uvicorn+starlette+httpx": script("starlette_httpx.py"),
    "aiohttp.web+aiohttp": script("aiohttp_web.py"),
    "granian-asgi+raw-asgi+aiohttp": f"{GRANIAN} --interface asgi asgi_raw_aiohttp:app",
    "granian-rsgi+aiohttp": f"{GRANIAN} --interface rsgi granian_rsgi_aiohttp:app",
}

COLUMNS = [
    ("c1 p50 +ms", "c1_added_p50_ms", "{:.3f}"),
    ("c1 p99 +ms", "c1_added_p99_ms", "{:.3f}"),
    ("c1 CPU µs/req", "c1_cpu_us_per_req", "{:.0f}"),
    ("64c peak req/s", ("peak_target", "rps"), "{:.0f}"),
    ("64c peak p99 ms", ("peak_target", "p99_ms"), "{:.1f}"),
    ("peak CPU µs/req", "peak_cpu_us_per_req", "{:.0f}"),
    ("paced: asked / got req/s", ("paced_rate", "paced_target"), "{:.0f} / {:.0f}"),
    ("paced p99 +ms", "paced_added_p99_ms", "{:.2f}"),
    ("errors", "errors", "{}"),
    ("RSS MiB", "rss_after_mib", "{:.0f}"),
]


def cell(summary: dict, key: str | tuple[str, str], fmt: str) -> str:
    if key == ("paced_rate", "paced_target"):
        return fmt.format(summary["paced_rate"], summary["paced_target"]["rps"])
    value = summary[key[0]][key[1]] if isinstance(key, tuple) else summary[key]
    return fmt.format(value)


def table(results: dict[str, dict]) -> str:
    lines = []
    for mode in ("nonstream", "stream"):
        lines.append(f"\n**{mode}**\n")
        lines.append("| candidate | " + " | ".join(c[0] for c in COLUMNS) + " |")
        lines.append("|---|" + "---:|" * len(COLUMNS))
        for name, res in results.items():
            s = res["summary"].get(mode)
            if s:
                lines.append(
                    f"| {name} | " + " | ".join(cell(s, k, f) for _, k, f in COLUMNS) + " |"
                )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="*", help="candidate names (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--tag", default="choices", help="result file prefix")
    ap.add_argument("--report", action="store_true", help="only tabulate existing results")
    args, rest = ap.parse_known_args()  # the rest goes to overhead.py (--repeat, --quick ...)
    if args.list:
        print("\n".join(f"{k}\n    {v}" for k, v in CANDIDATES.items()))
        return 0
    results = {}
    for name in args.only or CANDIDATES:
        out = BENCH / "results" / f"{args.tag}-{name}.json"
        if args.report:
            if out.exists():
                results[name] = json.loads(out.read_text())
            continue
        cmd = [PY, str(BENCH / "overhead.py"), "--name", name, "--target-cmd", CANDIDATES[name]]
        print(f"\n#### {name}", flush=True)
        rc = subprocess.run([*cmd, "--out", str(out), *rest], check=False).returncode
        if rc == 0:
            results[name] = json.loads(out.read_text())
        else:
            print(f"!! {name} failed (rc={rc})", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
