"""Every remote command ends a failure with one ``error: ...`` line and exit code 1:
the gateway unreachable, a refusal, or an answer of a shape it does not expect (a
server that is not Corral, or a Corral of another version)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from corral.adapters.store.keys import ADMIN_KEY_ENV
from corral.sim.launch import NodeSpec
from tests.ctl.support import Ran, run_cli
from tests.helpers import free_port, sim_fleet

KEY = "crl_" + "e" * 40


def one_error_line(ran: Ran) -> str:
    assert ran.code == 1, ran
    assert "Traceback" not in ran.err, ran.err
    assert ran.err.startswith("error: ") and ran.err.count("\n") == 1, ran.err
    return ran.err.removeprefix("error: ").strip()


@asynccontextmanager
async def odd_server() -> AsyncIterator[str]:
    """An HTTP server that answers the admin routes with what Corral never would."""

    async def ndjson_cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"type": "start", "model": "m", "backends": ["a"]}\n')
        await resp.write_eof()  # and no summary
        return resp

    def answer(body: object) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_: web.Request) -> web.Response:
            if isinstance(body, str):
                return web.Response(text=body, content_type="text/html")
            return web.json_response(body)

        return handler

    app = web.Application()
    app.router.add_get("/admin/models", answer({"models": [{"backends": 5}]}))
    app.router.add_get("/admin/backends", answer({"items": []}))
    app.router.add_get("/admin/queue", answer("<html>hello</html>"))
    app.router.add_get("/admin/config", answer([1, 2]))
    app.router.add_get("/admin/workers", answer({"workers": "none"}))
    app.router.add_post("/admin/models/pull", ndjson_cut)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_unexpected_answer_is_one_line_never_a_traceback(tmp_path: Path) -> None:
    async with odd_server() as url:
        runs = [
            ("models", "ls"),
            ("backends", "ls"),
            ("status",),
            ("queue",),
            ("config", "get"),
            ("workers", "ls"),
            ("models", "pull", "m"),
            ("models", "rm", "m"),
        ]
        ran = [await run_cli(*a, "--url", url, home=tmp_path) for a in runs]
        models, backends, status, queue, config, workers, pull, missing = ran
    assert "cannot read" in one_error_line(models)
    assert one_error_line(backends) == (
        "/admin/backends answered without a 'backends' list of objects: is this a Corral gateway?"
    )
    assert "/admin/backends answered without a 'backends' list" in one_error_line(status)
    assert one_error_line(queue).startswith("/admin/queue answered something that is not JSON")
    assert "without a 'config' object" in one_error_line(config)
    assert "without a 'workers' list" in one_error_line(workers)
    # The bars drawn so far stay on stderr above the error line.
    assert pull.code == 1 and "Traceback" not in pull.err
    assert pull.err.splitlines()[-1] == (
        "error: the pull stream ended before its summary: the gateway went away?"
    )
    assert one_error_line(missing).startswith("404 from /admin/models/delete")


async def test_an_unreachable_gateway_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    runs = [("status",), ("backends", "ls"), ("queue", "pause"), ("config", "reload")]
    ran = await asyncio.gather(*(run_cli(*a, "--url", url, home=tmp_path) for a in runs))
    for args, one in zip(runs, ran, strict=True):
        assert one_error_line(one) == (
            f"cannot reach the gateway at {url} (is `corral serve` running there?)"
        ), args


async def test_a_missing_key_says_where_to_put_one(tmp_path: Path) -> None:
    async with sim_fleet(NodeSpec(), auth={"mode": "on"}, environ={ADMIN_KEY_ENV: KEY}) as fleet:
        refused = await run_cli("models", "ls", "--url", fleet.url, home=tmp_path)
        wrong = await run_cli(
            "models", "ls", "--url", fleet.url, "--key", "crl_nope", home=tmp_path
        )
        allowed = await run_cli("models", "ls", "--url", fleet.url, "--key", KEY, home=tmp_path)
    assert one_error_line(refused).startswith("401 from /admin/models:")
    assert "CORRAL_API_KEY" in refused.err
    assert one_error_line(wrong).startswith("401 from /admin/models:")
    assert allowed.code == 0 and "llama3.2:1b" in allowed.out
