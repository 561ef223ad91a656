from __future__ import annotations

import json

from corral.core.errors import ModelNotFound, QueueTimeout


def test_errors_render_in_both_dialects() -> None:
    err = ModelNotFound("x")
    assert err.status == 404
    assert json.loads(err.ollama_body()) == {"error": 'model "x" not found, try pulling it first'}
    body = json.loads(err.openai_body())["error"]
    assert body["message"].startswith('model "x" not found')
    assert body["param"] == "model"
    assert body["type"] == "not_found_error"


def test_unavailable_errors_carry_retry_after() -> None:
    err = QueueTimeout("busy", retry_after=2.4)
    assert err.status == 503
    assert err.headers() == {"Retry-After": "2"}
