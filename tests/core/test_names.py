from __future__ import annotations

import pytest

from corral.core.names import normalize_model


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:1b", "llama3.2:1b"),
        ("library/qwen2.5", "library/qwen2.5:latest"),
        ("registry.local:5000/team/model", "registry.local:5000/team/model:latest"),
        ("registry.local:5000/team/model:q4", "registry.local:5000/team/model:q4"),
    ],
)
def test_a_name_without_a_tag_means_latest(given: str, expected: str) -> None:
    assert normalize_model(given) == expected
