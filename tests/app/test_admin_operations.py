"""Operations on a live gateway: the queue and admission, breakers, health checks, logs,
stats, and who may call them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from corral.adapters.store.audit import search_audit
from corral.adapters.store.keys import ADMIN_KEY_ENV, create_user_with_key, load_or_create_secret
from corral.app.gateway import Gateway
from corral.config import BackendConfig
from corral.sim.launch import NodeSpec
from corral.sim.model_types import NodeConfig
from tests.helpers import free_port, run_gateway, sim_fleet, until

MODEL = "llama3.2:1b"
BODY = {"model": MODEL, "prompt": "hi", "stream": False}
ADMIN = "crl_" + "a" * 40


async def audited(gw: Gateway, action: str) -> list[str]:
    assert gw.store is not None
    return [e.target for e in (await search_audit(gw.store, action=action)).items]


async def test_paused_admission_queues_requests_and_resume_serves_them() -> None:
    async with sim_fleet(NodeSpec(), max_concurrency=1) as fleet:
        gw = fleet.gw
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            paused = (await client.post("/admin/queue/pause")).json()
            waiting = [
                asyncio.create_task(
                    client.post("/api/generate", json=BODY, headers={"X-Corral-Tenant": tenant})
                )
                for tenant in ("alice", "bob", "bob")
            ]
            await until(lambda: gw.fleet.scheduler.waiting == 3)
            await asyncio.sleep(0.05)
            view = (await client.get("/admin/queue")).json()
            resumed = (await client.post("/admin/queue/resume")).json()
            answers = await asyncio.gather(*waiting)
        assert await audited(gw, "queue.pause") == [""]
        assert await audited(gw, "queue.resume") == [""]
    assert paused["paused"] is True and paused["waiting"] == 0
    assert (view["paused"], view["waiting"], view["by_model"]) == (True, 3, {MODEL: 3})
    assert [(t["tenant"], t["waiting"], t["by_model"]) for t in view["tenants"]] == [
        ("alice", 1, {MODEL: 1}),
        ("bob", 2, {MODEL: 2}),
    ]
    assert view["oldest_wait_s"] >= 0.05 and view["max_waiting"] == 1024
    assert resumed["paused"] is False
    assert [a.status_code for a in answers] == [200, 200, 200]


async def test_open_breakers_are_listed_and_cleared() -> None:
    async with sim_fleet(
        NodeSpec(),
        breakers={"consecutive_failures": 1, "open_s": 60, "max_open_s": 60},
        retry={"attempts": 1},
    ) as fleet:
        gw = fleet.gw
        fleet.node("sim0").set_faults(error_rate=1.0)
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            failed = await client.post("/api/generate", json=BODY)
            fleet.node("sim0").set_faults(error_rate=0.0)
            held = await client.post("/api/generate", json=BODY)
            listed = (await client.get("/admin/breakers")).json()
            in_view = (await client.get("/admin/backends/sim0")).json()["breakers"]
            unknown = await client.delete("/admin/breakers?backend=nope")
            other = (await client.delete("/admin/breakers?model=qwen2.5:0.5b")).json()
            cleared = (await client.delete(f"/admin/breakers?backend=sim0&model={MODEL}")).json()
            after = (await client.get("/admin/breakers")).json()
            served = await client.post("/api/generate", json=BODY)
        assert await audited(gw, "breakers.clear") == [f"sim0:{MODEL}", "*:qwen2.5:0.5b"]
    assert failed.status_code == 500 and held.status_code == 503
    assert listed["enabled"] is True
    [breaker] = listed["breakers"]
    assert (breaker["backend"], breaker["model"], breaker["state"]) == ("sim0", MODEL, "open")
    assert 50 < breaker["until_in_s"] <= 60 and breaker["trips"] == 1
    assert [(b["model"], b["state"], b["reason"]) for b in in_view] == [
        (MODEL, "open", "1 consecutive failures (500)")
    ]
    assert unknown.status_code == 404
    assert other == {"cleared": 0} and cleared == {"cleared": 1}
    assert after["breakers"] == []
    assert served.status_code == 200


async def test_a_health_check_probes_every_backend_now() -> None:
    silent = f"http://127.0.0.1:{free_port()}"
    async with sim_fleet(NodeSpec()) as fleet:
        gw = fleet.gw
        gw.add_backend(BackendConfig(name="down", url=silent))
        # Marked down by hand: only a probe made now can bring it back.
        gw.fleet.scheduler.unreachable("sim0", 0.0, "test")
        async with httpx.AsyncClient(base_url=fleet.url, timeout=30) as client:
            checked = (await client.post("/admin/health/check")).json()
        assert await audited(gw, "health.check") == [""]
    assert (checked["healthy"], checked["unhealthy"]) == (1, 1)
    by_name = {r["backend"]: r for r in checked["results"]}
    assert by_name["sim0"]["healthy"] is True and by_name["sim0"]["was_healthy"] is False
    assert by_name["sim0"]["models"] == 3 and by_name["sim0"]["error"] is None
    assert by_name["down"]["healthy"] is False
    assert "probe failed" in by_name["down"]["error"]


async def test_recent_logs_are_filtered_by_level_logger_and_limit() -> None:
    async with run_gateway([], log_buffer=50) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        await client.post("/admin/queue/pause")
        await client.post("/admin/queue/resume")
        warnings = (await client.get("/admin/logs?level=warning&logger=corral.fleet")).json()
        everything = (await client.get("/admin/logs?limit=1&logger=corral")).json()
        bad = await client.get("/admin/logs?level=loud")
        too_many = await client.get("/admin/logs?limit=0")
    assert warnings["capacity"] == 50
    assert [(r["level"], r["logger"]) for r in warnings["records"]] == [("warning", "corral.fleet")]
    assert "admission paused" in warnings["records"][0]["message"]
    assert len(everything["records"]) == 1  # the newest only
    assert everything["records"][0]["time"] >= warnings["records"][0]["time"]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "level"
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "limit"


async def test_stats_count_requests_and_time_each_backend() -> None:
    async with (
        sim_fleet(NodeSpec(), NodeSpec()) as fleet,
        httpx.AsyncClient(base_url=fleet.url, timeout=30) as client,
    ):
        for _ in range(4):
            assert (await client.post("/api/generate", json=BODY)).status_code == 200
        missing = await client.post("/api/generate", json={**BODY, "model": "nope"})
        stats = (await client.get("/admin/stats")).json()
    assert missing.status_code == 404
    assert stats["requests_total"] == 5 and stats["recent"] == 5
    assert stats["by_status"] == {"2xx": 4, "4xx": 1}
    assert stats["in_flight"] == 0 and stats["waiting"] == 0 and stats["uptime_s"] > 0
    backends = {b["name"]: b for b in stats["backends"]}
    assert sum(b["recent_requests"] for b in backends.values()) == 4
    assert sum(b["served"] for b in backends.values()) == 4
    for b in backends.values():
        if b["recent_requests"]:
            assert 0 < b["latency"]["p50_s"] <= b["latency"]["p95_s"]
            assert b["ttfb"]["mean_s"] is not None and b["recent_errors"] == 0


async def test_admin_routes_need_an_admin_key_when_auth_is_on(tmp_path: Path) -> None:
    async with run_gateway(
        [], data_dir=str(tmp_path), auth={"mode": "on"}, environ={ADMIN_KEY_ENV: ADMIN}
    ) as gw:
        assert gw.gw.store is not None
        secret = load_or_create_secret(tmp_path / "secret.key")
        _, user = await create_user_with_key(gw.gw.store, "alice", secret)
        await gw.gw.auth.reload()
        async with httpx.AsyncClient(base_url=gw.url) as client:
            for method, path in [
                ("GET", "/admin/backends"),
                ("POST", "/admin/queue/pause"),
                ("GET", "/admin/config"),
                ("GET", "/admin/logs"),
            ]:
                none = await client.request(method, path)
                plain = await client.request(
                    method, path, headers={"Authorization": f"Bearer {user.plaintext}"}
                )
                admin = await client.request(
                    method, path, headers={"Authorization": f"Bearer {ADMIN}"}
                )
                assert (none.status_code, plain.status_code, admin.status_code) == (
                    401,
                    403,
                    200,
                ), path
        assert await audited(gw.gw, "queue.pause") == [""]
        events = await search_audit(gw.gw.store, action="queue.pause")
        assert events.items[0].actor == "env"


async def test_a_slow_sim_keeps_requests_in_flight_for_the_stats() -> None:
    steady = NodeConfig(speed=1.0, jitter=0.0)
    async with (
        sim_fleet(NodeSpec(config=steady, loaded=(MODEL,))) as fleet,
        httpx.AsyncClient(base_url=fleet.url, timeout=30) as client,
    ):
        long = {**BODY, "options": {"num_predict": 400}}
        pending = asyncio.create_task(client.post("/api/generate", json=long))
        await until(lambda: fleet.gw.fleet.scheduler.in_flight == 1)
        stats = (await client.get("/admin/stats")).json()
        await pending
    assert stats["in_flight"] == 1
    assert stats["backends"][0]["in_flight"] == 1
