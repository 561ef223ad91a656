"""The request path of each endpoint, stage by stage (STYLE.md #4)."""

from __future__ import annotations

from starlette.routing import Route

from corral.app.factory import create_app
from corral.app.pipeline import Pipeline
from corral.config import load_settings


def stage_lists() -> dict[tuple[str, str], tuple[str, ...]]:
    app = create_app(load_settings(None, environ={}))
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for route in app.routes:
        # The control plane's routers are FastAPI's included routers: never pipelines.
        if isinstance(route, Route) and isinstance(route.endpoint, Pipeline):
            for method in route.methods or ():
                if method != "HEAD" or route.path.startswith("/api/blobs"):
                    out[(method, route.path)] = route.endpoint.stage_names
    return out


def test_every_endpoint_shows_its_stages() -> None:
    auth = "authenticate"
    inference = (auth, "read_request_body", "parse_ollama", "check_model_access", "admit", "relay")
    progress = (auth, "read_request_body", "parse_manage", "merged_progress")
    openai = (auth, "read_request_body", "parse_openai", "check_model_access", "admit", "relay")
    fan_out = (auth, "read_request_body", "parse_manage", "fan_out")
    assert stage_lists() == {
        ("POST", "/api/generate"): inference,
        ("POST", "/api/chat"): inference,
        ("POST", "/api/embed"): inference,
        ("POST", "/api/embeddings"): inference,
        ("POST", "/api/show"): inference,
        ("POST", "/api/pull"): progress,
        ("POST", "/api/push"): progress,
        ("POST", "/api/create"): progress,
        ("POST", "/api/copy"): fan_out,
        ("DELETE", "/api/delete"): fan_out,
        ("HEAD", "/api/blobs/{digest}"): (auth, "read_request_body", "blob_exists"),
        ("POST", "/api/blobs/{digest}"): (auth, "spool_blob", "blob_upload"),
        ("POST", "/v1/chat/completions"): openai,
        ("POST", "/v1/completions"): openai,
        ("POST", "/v1/embeddings"): openai,
        ("POST", "/jobs"): inference,  # seed 003's job: an Ollama generate
    }
