"""Spawned workers with real processes: `corral sim` nodes started, served, pruned, killed."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal

import httpx
import ollama
import psutil

from tests.app.workers_support import SIM, gone, workers_gateway
from tests.helpers import run_gateway, until


async def test_min_workers_start_with_the_gateway_and_serve_requests() -> None:
    async with workers_gateway(min=2, max=3) as wg:
        workers = await wg.until_ready(2)
        ids = {w.id for w in workers}
        assert ids == {"worker-1", "worker-2"}
        for w in workers:
            state = wg.running.gw.fleet.backends[w.id]
            assert (state.origin, state.kind, state.url, state.healthy) == (
                "worker",
                "ollama",
                w.url,
                True,
            )
        served = set()
        for _ in range(6):
            resp = await wg.generate(num_predict=3)
            assert resp.status_code == 200
            served.add(resp.headers["x-corral-backend"])
        assert served <= ids
        # The official client, unmodified, through the gateway to a worker.
        async with ollama.AsyncClient(host=wg.running.url) as client:
            answer = await client.chat(
                model="llama3.2:1b",
                messages=[{"role": "user", "content": "hi"}],
                options={"num_predict": 4},
            )
        assert answer.message.content


async def test_a_new_worker_pulls_the_required_models_before_it_serves() -> None:
    # --speed: the simulated pull (paced like a real download) takes a fraction of a second.
    command = "{python} -m corral.sim --port {port} --models qwen2.5:0.5b --speed 50"
    async with workers_gateway(command=command, models=["llama3.2:1b"]) as wg:
        resp = await wg.client.post("/admin/workers/spawn", json={"count": 2})
        assert resp.status_code == 201, resp.text
        body = resp.json()["workers"]
        assert [w["state"] for w in body] == ["ready", "ready"]
        assert all("llama3.2:1b" in w["models"] for w in body)
        for w in body:  # the engine itself holds the model now
            tags = (await wg.client.get(w["url"] + "/api/tags")).json()["models"]
            assert "llama3.2:1b" in {m["name"] for m in tags}
        resp = await wg.generate(num_predict=2)
        assert resp.status_code == 200
        assert resp.headers["x-corral-backend"] in {w["id"] for w in body}


async def test_spawning_past_max_is_refused_and_starts_nothing() -> None:
    async with workers_gateway(min=0, max=2) as wg:
        resp = await wg.client.post("/admin/workers/spawn", json={"count": 3})
        assert resp.status_code == 409
        error = resp.json()["error"]
        assert error["param"] == "count"
        assert "spawning 3 would make 3 workers; workers.max is 2" in error["message"]
        assert wg.pool.workers == {}
        assert not wg.pids()
        bad = await wg.client.post("/admin/workers/spawn", json={"count": 0})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "count"


async def test_spawn_without_workers_configured_says_how_to_configure_them() -> None:
    async with run_gateway([]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        listing = await client.get("/admin/workers")
        spawn = await client.post("/admin/workers/spawn")
    assert listing.status_code == 200
    assert listing.json()["enabled"] is False
    assert spawn.status_code == 409
    assert "set workers.command" in spawn.json()["error"]["message"]


async def test_prune_idle_stops_idle_workers_and_spares_busy_ones() -> None:
    async with workers_gateway(min=0, max=3, autoscale=False) as wg:
        await wg.client.post("/admin/workers/spawn", json={"count": 1})
        (busy,) = wg.ready()
        await wg.client.post(busy.url + "/_sim/faults", json={"slow": 200.0})
        request = asyncio.create_task(wg.generate(num_predict=5))
        await until(lambda: wg.running.gw.fleet.backends[busy.id].in_flight == 1)
        await wg.client.post("/admin/workers/spawn", json={"count": 1})
        (idle,) = [w for w in wg.ready() if w is not busy]
        resp = await wg.client.post("/admin/workers/prune", json={"mode": "idle"})
        assert resp.status_code == 200
        assert [(w["id"], w["state"]) for w in resp.json()["workers"]] == [(idle.id, "stopped")]
        assert gone(idle.handle.pid if idle.handle else None)
        await wg.client.post(busy.url + "/_sim/faults", json={"slow": 1.0})
        assert (await request).status_code == 200
        assert [w.id for w in wg.ready()] == [busy.id]


async def test_prune_all_drains_a_busy_worker_before_stopping_it() -> None:
    async with workers_gateway(min=0, max=2, autoscale=False) as wg:
        await wg.client.post("/admin/workers/spawn", json={"count": 1})
        (worker,) = wg.ready()
        await wg.client.post(worker.url + "/_sim/faults", json={"slow": 100.0})
        body = {"model": "llama3.2:1b", "prompt": "hi", "options": {"num_predict": 6}}
        async with wg.client.stream("POST", "/api/generate", json=body) as stream:
            lines = stream.aiter_lines()
            first = json.loads(await anext(lines))
            assert first["done"] is False
            resp = await wg.client.post("/admin/workers/prune", json={"mode": "all", "wait": False})
            assert [w["state"] for w in resp.json()["workers"]] == ["draining"]
            assert not wg.running.gw.fleet.backends[worker.id].candidate
            await wg.client.post(worker.url + "/_sim/faults", json={"slow": 1.0})
            rest = [json.loads(line) async for line in lines if line]
        assert rest[-1]["done"] is True  # it finished its request before it stopped
        await until(lambda: worker.state == "stopped", timeout=10)
        assert worker.id not in wg.running.gw.fleet.backends
        assert worker.exit_code == 0  # SIGTERM, handled: a clean stop


async def test_delete_stops_one_worker_and_404s_an_unknown_one() -> None:
    async with workers_gateway(min=0, max=2, autoscale=False) as wg:
        await wg.client.post("/admin/workers/spawn", json={"count": 2})
        resp = await wg.client.delete("/admin/workers/worker-1")
        assert resp.status_code == 200
        assert resp.json()["state"] == "stopped"
        assert [w.id for w in wg.ready()] == ["worker-2"]
        again = await wg.client.delete("/admin/workers/worker-1")
        assert again.status_code == 404
        assert again.json()["error"]["message"] == "'worker-1' is already stopped"
        assert (await wg.client.delete("/admin/workers/nope")).status_code == 404
        detail = await wg.client.get("/admin/workers/worker-1", params={"lines": 5})
        assert detail.json()["state"] == "stopped"
        assert any("corral sim" in line for line in detail.json()["log"])


async def test_a_killed_worker_is_noticed_removed_and_replaced_up_to_min() -> None:
    async with workers_gateway(min=2, max=3) as wg:
        await wg.until_ready(2)
        victim = wg.pool.workers["worker-1"]
        assert victim.handle is not None and victim.handle.pid
        os.kill(victim.handle.pid, signal.SIGKILL)
        await until(lambda: victim.state == "failed", timeout=5)
        assert victim.error == f"exited unexpectedly with code {-signal.SIGKILL}"
        assert "worker-1" not in wg.running.gw.fleet.backends
        workers = await wg.until_ready(2)
        assert {w.id for w in workers} == {"worker-2", "worker-3"}
        assert wg.pool.workers["worker-3"].reason == "min"
        listing = (await wg.client.get("/admin/workers")).json()
        assert listing["recent"][0]["id"] == "worker-1"
        assert listing["recent"][0]["state"] == "failed"
        assert (await wg.generate(num_predict=2)).status_code == 200


async def test_a_worker_that_runs_but_stops_answering_is_replaced_up_to_min() -> None:
    health = {"interval_s": 0.2, "timeout_s": 0.3}
    async with workers_gateway(min=1, max=2, unhealthy_s=1.0, settings={"health": health}) as wg:
        (hung,) = await wg.until_ready(1)
        assert hung.handle is not None and hung.handle.pid
        # The process stays up; every request to it (probes too) is accepted, never answered.
        async with httpx.AsyncClient() as sim:
            (await sim.post(f"{hung.url}/_sim/faults", json={"hang": True})).raise_for_status()
        await until(lambda: hung.state == "failed", timeout=10)
        assert hung.error is not None and hung.error.startswith("unhealthy for ")
        assert gone(hung.handle.pid)
        assert hung.id not in wg.running.gw.fleet.backends
        (fresh,) = await wg.until_ready(1, timeout=15)
        assert fresh.id != hung.id and fresh.reason == "min"
        assert (await wg.generate(num_predict=2)).status_code == 200


async def test_a_worker_that_stops_answering_stays_when_unhealthy_s_is_0() -> None:
    health = {"interval_s": 0.2, "timeout_s": 0.3}
    async with workers_gateway(min=1, max=2, unhealthy_s=0, settings={"health": health}) as wg:
        (hung,) = await wg.until_ready(1)
        async with httpx.AsyncClient() as sim:
            (await sim.post(f"{hung.url}/_sim/faults", json={"hang": True})).raise_for_status()
        backend = wg.running.gw.fleet.backends[hung.id]
        await until(lambda: not backend.healthy, timeout=5)
        await asyncio.sleep(1.5)  # past what unhealthy_s 1 would have allowed
        assert wg.pool.replace_unhealthy() == []
        assert hung.state == "ready" and list(wg.pool.workers) == [hung.id]
        async with httpx.AsyncClient() as sim:
            await sim.post(f"{hung.url}/_sim/faults", json={"hang": False})


async def test_a_request_for_a_worker_model_starts_a_worker_from_zero() -> None:
    async with workers_gateway(min=0, max=2, models=["llama3.2:1b"]) as wg:
        assert wg.pool.workers == {}
        # Two at once: one worker starts, and both wait for it.
        first, second = await asyncio.gather(wg.generate(num_predict=2), wg.generate(num_predict=2))
        assert first.status_code == second.status_code == 200, first.text
        (started,) = wg.ready()
        assert started.reason == "demand"
        assert first.headers["x-corral-backend"] == started.id
        listing = (await wg.client.get("/admin/workers")).json()
        assert listing["events"][0]["added"] == [started.id]
        assert "llama3.2:1b, which no backend holds" in listing["events"][0]["reason"]
        # Another model is not the workers' to serve: refused as before, nothing starts.
        other = await wg.client.post(
            "/api/generate", json={"model": "mistral:7b", "prompt": "hi", "stream": False}
        )
        assert other.status_code == 404, other.text
        assert list(wg.pool.workers) == [started.id]


async def test_no_worker_starts_from_zero_with_autoscale_off() -> None:
    async with workers_gateway(min=0, max=2, models=["llama3.2:1b"], autoscale=False) as wg:
        resp = await wg.generate(num_predict=2)
        assert resp.status_code == 404, resp.text
        assert wg.pool.workers == {} and not wg.pool.ended


async def test_a_worker_that_fails_to_start_for_a_request_is_a_503_saying_so() -> None:
    command = "{python} -c 'import sys; sys.exit(3)' {port}"
    async with workers_gateway(command=command, min=0, max=1, models=["llama3.2:1b"]) as wg:
        resp = await wg.generate(num_predict=2)
        assert resp.status_code == 503, resp.text
        assert "the worker started for it failed: exited with code 3" in resp.text
        assert resp.headers.get("retry-after") is not None
        assert [w.reason for w in wg.pool.ended] == ["demand"]


async def test_the_autoscaler_follows_a_burst_within_max_and_cooldown() -> None:
    cooldown = 1.0
    command = SIM + " --speed 0.3"  # ~100 tokens/s: a 100-token answer takes about 1 s
    async with workers_gateway(
        command=command,
        min=1,
        max=3,
        max_concurrency=1,
        scale_up_queue=2,
        scale_up_wait_s=0.2,
        cooldown_s=cooldown,
        idle_s=0.5,
    ) as wg:
        await wg.until_ready(1)
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, len(wg.pool.live()))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            answers = await asyncio.gather(*(wg.generate(num_predict=100) for _ in range(10)))
            assert [r.status_code for r in answers] == [200] * 10
            assert len({r.headers["x-corral-backend"] for r in answers}) >= 2
            await until(lambda: len(wg.pool.live()) == 1, timeout=15)
        finally:
            watcher.cancel()
        assert most == 3  # grew to max, never past it
        scaled = [e for e in reversed(wg.pool.events) if e.kind != "min"]
        assert scaled[0].added and scaled[-1].removed
        gaps = [b.at - a.at for a, b in itertools.pairwise(scaled)]
        assert all(gap >= cooldown * 0.99 for gap in gaps), gaps


async def test_a_worker_that_cannot_start_fails_the_spawn_and_nothing_is_kept() -> None:
    command = "{python} -c \"import sys; print('no GPU found'); sys.exit(3)\" {port}"
    async with workers_gateway(command=command, autoscale=False) as wg:
        resp = await wg.client.post("/admin/workers/spawn", json={"count": 2})
        assert resp.status_code == 502
        message = resp.json()["error"]["message"]
        assert "2 of 2 workers did not become ready" in message
        assert "exited with code 3 while starting" in message
        assert "no GPU found" in message
        assert wg.pool.workers == {}
        recent = (await wg.client.get("/admin/workers")).json()["recent"]
        assert {(w["state"], w["exit_code"]) for w in recent} == {("failed", 3)}


async def test_a_command_that_keeps_failing_is_retried_with_backoff() -> None:
    command = "{python} -c 'import sys; sys.exit(1)' {port}"
    async with workers_gateway(command=command, min=1, interval_s=0.2) as wg:
        await until(lambda: len(wg.pool.ended) >= 5, timeout=30)
        starts = sorted(w.created_at for w in wg.pool.ended)[:5]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        # The n-th failure in a row holds the next start back 0.2 s x 2^(n-1).
        assert all(gap >= 0.2 * 2**i for i, gap in enumerate(gaps)), gaps
        assert {w.reason for w in wg.pool.ended} == {"min"}


async def test_a_worker_not_ready_in_time_is_stopped() -> None:
    command = "{python} -c 'import time; time.sleep(60)' {port}"
    async with workers_gateway(command=command, ready_timeout_s=0.5, autoscale=False) as wg:
        resp = await wg.client.post("/admin/workers/spawn", json={})
        assert resp.status_code == 502
        assert "not ready within 0.5s (waiting to answer)" in resp.json()["error"]["message"]
        (worker,) = wg.pool.ended
        assert gone(worker.handle.pid if worker.handle else None)


async def test_stopping_the_gateway_stops_every_worker() -> None:
    pids: set[int] = set()
    async with workers_gateway(min=2, max=3) as wg:
        await wg.until_ready(2)
        starting = await wg.client.post("/admin/workers/spawn", json={"wait": False})
        assert starting.json()["workers"][0]["state"] == "starting"
        pids = {w.handle.pid for w in wg.pool.workers.values() if w.handle and w.handle.pid}
        assert len(pids) >= 2
    assert all(gone(pid) for pid in pids)


async def test_gpus_and_ports_are_handed_out_from_the_configured_lists() -> None:
    with_gpu = "{python} -m corral.sim --port {port} --models llama3.2:1b"
    base = 23000 + os.getpid() % 1000 * 20
    async with workers_gateway(
        command=with_gpu,
        env={"CUDA_VISIBLE_DEVICES": "{gpu}", "WORKER_NAME": "{id}"},
        gpus=["0", "1"],
        ports=f"{base}-{base + 9}",
        autoscale=False,
    ) as wg:
        resp = await wg.client.post("/admin/workers/spawn", json={"count": 3})
        assert resp.status_code == 201, resp.text
        body = resp.json()["workers"]
        assert [w["gpu"] for w in body] == ["0", "1", "0"]
        assert all(base <= w["port"] <= base + 9 for w in body)
        for w in body:
            environ = psutil.Process(w["pid"]).environ()
            assert (environ["CUDA_VISIBLE_DEVICES"], environ["WORKER_NAME"]) == (w["gpu"], w["id"])
        # A freed GPU is refilled first.
        await wg.client.delete("/admin/workers/worker-2")
        again = await wg.client.post("/admin/workers/spawn", json={})
        assert again.json()["workers"][0]["gpu"] == "1"
