"""The worker routes as an operator meets them: the admin scope, the audit log, seed 001."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.adapters.store.audit import search_audit
from corral.adapters.store.keys import create_user_with_key, load_or_create_secret
from tests.app.workers_support import workers_gateway

ADMIN = "crl_" + "w" * 44


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_worker_routes_need_the_admin_scope(tmp_path: Path) -> None:
    async with workers_gateway(
        environ={"CORRAL_ADMIN_KEY": ADMIN},
        settings={"auth": {"mode": "on", "reload_s": 0.1}, "data_dir": str(tmp_path)},
    ) as wg:
        store = wg.running.gw.store
        assert store is not None
        secret = load_or_create_secret(tmp_path / "secret.key")
        _, alice = await create_user_with_key(store, "alice", secret)
        user = bearer(alice.plaintext)
        routes = [
            ("GET", "/admin/workers"),
            ("GET", "/admin/workers/worker-1"),
            ("POST", "/admin/workers/spawn"),
            ("POST", "/admin/workers/prune"),
            ("DELETE", "/admin/workers/worker-1"),
            ("GET", "/admin/instances"),
            ("POST", "/admin/instances/spawn"),
            ("POST", "/admin/instances/prune"),
        ]
        for method, path in routes:
            assert (await wg.client.request(method, path)).status_code == 401, path
        for _ in range(100):  # the key cache reloads every 0.1 s
            if (await wg.client.get("/admin/workers", headers=user)).status_code != 401:
                break
            await asyncio.sleep(0.05)
        for method, path in routes:
            resp = await wg.client.request(method, path, headers=user)
            assert resp.status_code == 403, (path, resp.text)
            assert "lacks the admin scope" in resp.json()["error"]["message"]
        assert wg.pool.workers == {}  # nothing was started by the refused calls
        assert (await wg.client.get("/admin/workers", headers=bearer(ADMIN))).status_code == 200


async def test_admin_actions_and_autoscaler_actions_are_audited() -> None:
    async with workers_gateway(
        min=1, max=3, environ={"CORRAL_ADMIN_KEY": ADMIN}, settings={"auth": {"mode": "on"}}
    ) as wg:
        admin = bearer(ADMIN)
        await wg.until_ready(1)
        spawned = await wg.client.post("/admin/workers/spawn", json={"count": 1}, headers=admin)
        assert spawned.status_code == 201
        new_id = spawned.json()["workers"][0]["id"]
        removed = await wg.client.delete(f"/admin/workers/{new_id}", headers=admin)
        assert removed.status_code == 200
        pruned = await wg.client.post(
            "/admin/workers/prune", json={"mode": "all", "count": 1}, headers=admin
        )
        assert [w["id"] for w in pruned.json()["workers"]] == ["worker-1"]
        store = wg.running.gw.store
        assert store is not None
        events = (await search_audit(store)).items
        mine = [(e.actor, e.action, e.target) for e in events if e.action.startswith("workers.")]
        assert ("env", "workers.spawn", new_id) in mine
        assert ("env", "workers.remove", new_id) in mine
        assert ("env", "workers.prune", "worker-1") in mine
        assert ("autoscaler", "workers.scale_up", "worker-1") in mine
        spawn_event = next(e for e in events if e.action == "workers.spawn")
        assert spawn_event.after[0]["state"] == "ready"
        prune_event = next(e for e in events if e.action == "workers.prune")
        assert prune_event.before == {"mode": "all", "count": 1}


async def test_seed_001_instance_routes_are_aliases_of_the_worker_routes() -> None:
    async with workers_gateway(min=0, max=3, autoscale=False) as wg:
        # The seed's own calls carry no body: spawn starts one, prune stops them all.
        spawned = await wg.client.post("/admin/instances/spawn")
        assert spawned.status_code == 201
        assert [w["id"] for w in spawned.json()["workers"]] == ["worker-1"]
        await wg.client.post("/admin/instances/spawn", json={"count": 1})
        listing = (await wg.client.get("/admin/instances")).json()
        real = (await wg.client.get("/admin/workers")).json()
        assert [w["id"] for w in listing["workers"]] == ["worker-1", "worker-2"]
        for view in (*listing["workers"], *real["workers"]):
            view.pop("idle_s")  # read a moment apart
        assert listing["workers"] == real["workers"]
        assert listing["max"] == 3
        pruned = await wg.client.post("/admin/instances/prune")
        assert sorted(w["id"] for w in pruned.json()["workers"]) == ["worker-1", "worker-2"]
        assert wg.pool.workers == {}
        # The real prune route's default is the gentle one: idle workers only.
        await wg.client.post("/admin/workers/spawn")
        assert (await wg.client.post("/admin/workers/prune")).json()["workers"][0]["state"] == (
            "stopped"
        )


async def test_bad_bodies_name_the_field() -> None:
    async with workers_gateway(min=0, max=2, autoscale=False) as wg:
        cases = [
            ("/admin/workers/spawn", {"count": "many"}, "count"),
            ("/admin/workers/spawn", {"cout": 2}, "cout"),  # a typo is not ignored
            ("/admin/workers/prune", {"mode": "some"}, "mode"),
            ("/admin/workers/prune", {"count": 0}, "count"),
        ]
        for path, body, field in cases:
            resp = await wg.client.post(path, json=body)
            assert resp.status_code == 400, (path, body, resp.text)
            assert resp.json()["error"]["param"] == field
        assert wg.pool.workers == {}
        lines = await wg.client.get("/admin/workers/worker-1", params={"lines": -1})
        assert lines.status_code == 400
        assert lines.json()["error"]["param"] == "lines"
