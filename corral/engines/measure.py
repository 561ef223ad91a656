"""Measure the real engine with the tiny model: ``python -m corral.engines.measure``.

Prints load time, resident memory, short-chat latency and generation speed, the
figures quoted in docs/engines.md. Each timing is the median of a few runs; requests
are non-streamed chats, so tokens/s counts whole requests (prompt and HTTP included).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from corral.engines.llamacpp import start_llamacpp
from corral.engines.tinymodel import write_tiny_model

__all__ = ["main", "measure"]


def _post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data: dict[str, Any] = json.loads(response.read())
        return data
    finally:
        conn.close()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _chat(port: int, max_tokens: int) -> tuple[float, int]:
    body = {"messages": [{"role": "user", "content": "hello world"}], "max_tokens": max_tokens}
    started = time.perf_counter()
    reply = _post(port, "/v1/chat/completions", body)
    return time.perf_counter() - started, int(reply["usage"]["completion_tokens"])


def _all_slots_tokens_per_s(port: int, parallel: int) -> float:
    """Every slot busy at once: the engine's total throughput."""
    results: list[tuple[float, int]] = []

    def work() -> None:
        results.append(_chat(port, 400))

    workers = [threading.Thread(target=work) for _ in range(parallel)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(n for _, n in results) / (time.perf_counter() - began)


def measure(runs: int = 5, parallel: int = 2, threads: int = 1) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        model = write_tiny_model(Path(tmp) / "tiny.gguf")
        write_s = time.perf_counter() - began
        starts, loads = [], []
        for _ in range(runs):
            began = time.perf_counter()
            with start_llamacpp(model, parallel=parallel, threads=threads) as engine:
                starts.append(time.perf_counter() - began)
                loads.append(engine.load_seconds or float("nan"))
        with start_llamacpp(model, parallel=parallel, threads=threads) as engine:
            rss_idle = _rss_mib(engine.pid)
            short = [_chat(engine.port, 8)[0] for _ in range(runs * 4)]
            long = [_chat(engine.port, 400) for _ in range(runs)]
            together = [_all_slots_tokens_per_s(engine.port, parallel) for _ in range(runs)]
            rss_busy = _rss_mib(engine.pid)
    return {
        "write_model_s": write_s,
        "load_model_in_engine_s": statistics.median(loads),
        "start_to_healthy_s": statistics.median(starts),
        "rss_idle_mib": rss_idle,
        "rss_after_work_mib": rss_busy,
        "short_chat_8_tokens_ms": statistics.median(short) * 1000,
        "one_request_tokens_per_s": statistics.median(n / s for s, n in long),
        "all_slots_tokens_per_s": statistics.median(together),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.engines.measure")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for name, value in measure(args.runs, args.parallel, args.threads).items():
        print(f"{name:26} {value:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
