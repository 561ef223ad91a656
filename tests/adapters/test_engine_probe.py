"""Asking a URL what it is before it joins the fleet: real servers on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from corral.adapters.engine_probe import check_engine
from corral.sim.launch import NodeSpec, start_nodes, stop_nodes
from corral.sim.vllm_launch import VllmSpec
from tests.helpers import free_port


@asynccontextmanager
async def web_page() -> AsyncIterator[str]:
    """A web server that is no engine: every path is an HTML page."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_engines_of_the_declared_kind_pass() -> None:
    nodes = await start_nodes([NodeSpec(), VllmSpec(model="Qwen/Qwen2.5-0.5B-Instruct")])
    try:
        ollama = await check_engine(nodes[0].url, "ollama", timeout=5)
        vllm = await check_engine(nodes[1].url, "openai", timeout=5)
    finally:
        await stop_nodes(nodes)
    assert ollama.ok and ollama.detail.startswith("Ollama ") and ollama.models == 1
    assert vllm.ok and vllm.models == 1


async def test_a_web_page_is_no_engine_and_the_answer_says_what_answered() -> None:
    async with web_page() as url:
        as_ollama = await check_engine(url, "ollama", timeout=5)
        as_openai = await check_engine(url + "/v1", "openai", timeout=5)
    assert not as_ollama.ok
    assert as_ollama.detail == (
        f"{url} is not an Ollama server: GET /api/version answered HTTP 200 (text/html)"
    )
    assert not as_openai.ok
    assert "GET /v1/models answered HTTP 200 (text/html)" in as_openai.detail
    assert "try it without the trailing /v1" in as_openai.detail


async def test_nothing_listening_is_said_plainly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    check = await check_engine(url, "openai", timeout=5)
    assert not check.ok and check.detail.startswith(f"nothing answered at {url}: ")
