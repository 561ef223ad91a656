"""How long a spawned worker takes to become ready, and to drain and stop.

    python bench/workers.py [--n 5]

Runs a gateway on a loopback socket with the `process` provider and, for each kind
of worker, spawns one through `POST /admin/workers/spawn` (which answers once it is
ready), then stops it with `DELETE /admin/workers/{id}`, n times. The spawn time is
the worker's own record (reserved to ready); the stop time is the DELETE's round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from corral.app.factory import create_app
from corral.app.gateway import Gateway
from corral.app.listener import Server
from corral.config import load_settings
from corral.engines.tinymodel import write_tiny_model


async def _measure(name: str, workers: dict[str, Any], n: int, data_dir: str) -> None:
    settings = load_settings(
        None,
        environ={},
        overrides={"data_dir": data_dir, "workers": {"autoscale": False, **workers}},
    )
    gw = Gateway(settings)
    app = create_app(settings, gateway=gw)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = Server(uvicorn.Config(app, loop="none", lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():  # it failed to start: say why
            task.result()
        await asyncio.sleep(0.01)
    ready: list[float] = []
    stops: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            for _ in range(n):
                resp = await client.post("/admin/workers/spawn", json={"count": 1})
                resp.raise_for_status()
                worker_id = resp.json()["workers"][0]["id"]
                assert gw.workers is not None
                w = gw.workers.find(worker_id)
                assert w is not None and w.ready_at is not None
                ready.append(w.ready_at - w.created_at)
                began = loop.time()
                (await client.delete(f"/admin/workers/{worker_id}")).raise_for_status()
                stops.append(loop.time() - began)
    finally:
        server.should_exit = True
        await task
        sock.close()
    print(
        f"{name}: spawn to ready median {statistics.median(ready):.2f} s "
        f"(min {min(ready):.2f}, max {max(ready):.2f}); drain and stop median "
        f"{statistics.median(stops):.3f} s"
    )


async def main(n: int) -> None:
    work = tempfile.mkdtemp(prefix="corral-bench-workers-")
    try:
        model = write_tiny_model(Path(work) / "tiny.gguf")
        sim = "{python} -m corral.sim --port {port}"
        await _measure("corral.sim", {"command": sim + " --models llama3.2:1b"}, n, work)
        await _measure(
            "corral.sim pulling llama3.2:1b (--speed 50)",
            {"command": sim + " --models qwen2.5:0.5b --speed 50", "models": ["llama3.2:1b"]},
            n,
            work,
        )
        llamacpp = f"{{python}} -m corral.engines.llamacpp --model {model} --port {{port}}"
        await _measure(
            "llama.cpp, tiny model",
            {"command": llamacpp + " --alias tiny", "kind": "openai", "models": ["tiny"]},
            n,
            work,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5, help="spawns per kind of worker")
    asyncio.run(main(parser.parse_args().n))
