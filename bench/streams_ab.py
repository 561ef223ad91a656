"""A/B of Corral's per-chunk CPU: two source trees side by side, interleaved loads.

    git archive HEAD~1 corral | tar -x -C /tmp/base        # the "before" tree
    .venv/bin/python bench/streams_ab.py --trees base=/tmp/base,new=. --cases a,b
    .venv/bin/python bench/streams_ab.py --loads 100x20,1000x100 --reps 3
    .venv/bin/python bench/streams_ab.py --loads 1000x50 --direct --gc-probe
    .venv/bin/python bench/streams_ab.py --trees new=.,nginx=nginx --loads 100x20,1000x40
    .venv/bin/python bench/streams_ab.py --trees new=.,floor=floor,nginx=nginx --cases a,b

A tree named ``nginx`` (path ``nginx``) is nginx as a plain reverse proxy in Corral's
place (`streams.Rig.start_nginx`; Debian's nginx-light): the same rig's cost per chunk
for a proxy in C, which shows how much of a figure is the rig's and the kernel's. A
tree named ``floor`` is bench/floor_proxy.py: uvicorn with Corral's stream client and
direct writes but none of its gateway work, the Python stack's own cost per chunk.
Both pass answers through as they are, so they fit the pass-through cases (a, b) only.

``--direct`` also runs each load straight at the backend (the rig's own delays);
``--gc-probe`` times every collection in the gateways (bench/gcprobe) and prints the
pauses inside each window as an HTML comment under the table.

Both gateways run at once on the gateway core (each started with its tree first on
PYTHONPATH), behind one paced backend (bench/stream_backend.py); only one is loaded at
a time, and the order alternates each repetition, so background load on a shared
machine hits both about equally. A load ``NxMS`` is N streams at MS ms per chunk,
measured like bench/streams.py's paced levels. Prints one Markdown row per case, load
and tree (median of the repetitions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

import streams

REFERENCES = ("nginx", "floor")  # proxies run in Corral's place, not source trees


async def run(
    ab: argparse.Namespace, args: argparse.Namespace, trees: list[tuple[str, str]]
) -> dict[tuple[str, ...], Any]:
    bench = streams.Bench(args)
    rig = bench.rig
    rig.start_backend()
    results: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    per_stream: dict[str, int] = {}  # chunks in one stream, as the client counts them
    try:
        for name in args.cases:
            case = streams.CASES[name]
            gateways = []
            for tree, path in trees:
                if path == "nginx":  # the reference: a C proxy in Corral's place
                    gateways.append((tree, *rig.start_nginx()))
                    continue
                if path == "floor":  # the Python stack alone, no gateway work
                    gateways.append((tree, *rig.start_floor()))
                    continue
                os.environ["PYTHONPATH"] = path
                try:
                    gateways.append((tree, *rig.start_gateway(case)))
                finally:
                    os.environ.pop("PYTHONPATH", None)
            for tree, _, port in gateways:
                check = await streams.one_stream(port, case.client)
                if not check["clean"]:
                    raise RuntimeError(f"{tree}: a stream through Corral failed: {check}")
                per_stream[name] = check["chunks"]
            for load in ab.loads.split(","):
                n, interval = load.split("x")
                for rep in range(ab.reps):
                    if ab.direct:  # the rig alone: what the backend and clients add
                        r = await bench.paced(
                            rig.backend_port, case.backend, int(n), float(interval), None
                        )
                        results.setdefault((name, load, "direct"), []).append(r)
                        bench.log(f"{name} {load} direct", r)
                    for tree, proc, port in gateways if rep % 2 == 0 else gateways[::-1]:
                        r = await bench.paced(port, case.client, int(n), float(interval), proc.pid)
                        r["kept_up"] = kept_up(r, int(n), float(interval), per_stream[name], args)
                        results.setdefault((name, load, tree), []).append(r)
                        bench.log(f"{name} {load} {tree}", r)
            references = {tree for tree, path in trees if path in REFERENCES}
            for tree, proc, port in gateways:
                if args.gc_probe and tree not in references:  # uvicorn re-raises SIGTERM
                    # after shutdown, so the probe writes on SIGUSR2, not atexit
                    os.kill(proc.pid, signal.SIGUSR2)
                    await asyncio.sleep(1.0)
                rig.children.stop(proc)
                mine = [
                    r for (c, _, t), rs in results.items() if c == name and t == tree for r in rs
                ]
                streams.gc_pauses(rig.workdir / f"gc-{port}.json", mine)
    finally:
        rig.children.stop_all()
    return results


def kept_up(
    r: dict[str, Any], streams: int, interval_ms: float, per_stream: int, args: argparse.Namespace
) -> float:
    """Chunks the clients got ÷ chunks the backend offered in the window. Well under 100%
    means something fell behind (on a shared machine, often the rig itself): chunks then
    arrive in bunches and the CPU per chunk of that window reads low."""
    length_ms = args.first_ms + (args.chunks + 1) * interval_ms
    offered = streams * per_stream / length_ms * 1000
    return float(r["chunks_per_s"]) / offered


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trees", default="base=/tmp/base,new=.", help="name=path,name=path")
    ap.add_argument("--cases", default="a", help="as in streams.py: a,b,c,d or names")
    ap.add_argument("--loads", default="100x20,1000x100", help="streams x interval ms, ...")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--direct", action="store_true", help="also each load direct to the backend")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per window")
    ab, rest = ap.parse_known_args()
    args = streams.parse_args(
        ["--cases", ab.cases, "--duration", str(ab.duration), "--max-seconds", "3600", *rest]
    )
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {int(c) for c in args.load_cpus.split(",")})
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    trees = [
        (t, p if p in REFERENCES else str(Path(p).resolve()))
        for t, p in (x.split("=", 1) for x in ab.trees.split(","))
    ]
    results = (uvloop.run if uvloop is not None else asyncio.run)(run(ab, args, trees))
    print(
        "\n| case | load | tree | µs/chunk per run | median | usr | sys "
        "| inter-chunk p99 ms | first chunk p99 ms | kept up |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, load, tree), rs in results.items():
        us = [r.get("gw_cpu_us_per_chunk", 0.0) for r in rs]
        kept = [r.get("kept_up", 0.0) for r in rs]
        print(
            f"| {name} | {load} | {tree} | {' '.join(f'{u:.1f}' for u in us)} "
            f"| {statistics.median(us):.1f} "
            f"| {statistics.median(r.get('gw_user_us_per_chunk', 0.0) for r in rs):.1f} "
            f"| {statistics.median(r.get('gw_sys_us_per_chunk', 0.0) for r in rs):.1f} "
            f"| {statistics.median(r['icd_ms'][99] for r in rs):.2f} "
            f"| {statistics.median(r['ttft_ms'][99] for r in rs):.1f} "
            f"| {' '.join(f'{k:.0%}' for k in kept)} |"
        )
        for r in rs:
            if r.get("gc"):
                print(f"<!-- {name} {load} {tree}:{streams.gc_line(r)} -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
