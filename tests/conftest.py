"""Shared fixtures: tiny data files and the path to the shared evaluation data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfdistill.evaluation.tasks.base import default_data_dir

DATA = default_data_dir()
"""The evaluation data: $SELFDISTILL_DATA, else ../shared/data beside the checkout (as the product resolves it)."""

ROWS = [
    {"prompt": "What is 2+3?", "completion": "2+3 = 5. The answer is 5."},
    {"prompt": "Name a primary color.", "completion": "Red is a primary color."},
    {"prompt": [{"role": "user", "content": "Say hi in French."}], "completion": "Bonjour!"},
    {
        "prompt": "What is the capital of Italy?",
        "demonstration": "The capital of Italy is Rome.",
        "context": "Rome has been the capital of Italy since 1871.",
    },
]


@pytest.fixture
def small_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.fixture(scope="session")
def tiny():
    from selfdistill.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"evaluation data not found at {DATA} (set SELFDISTILL_DATA)")
    return DATA


@pytest.fixture
def no_hub_retries(monkeypatch):
    """Fail the test if the hub client's retry-with-backoff loop runs (a name must be decided in one request)."""
    import huggingface_hub.utils._http as hub_http

    def no_backoff(*_args, **_kwargs):
        raise AssertionError("the hub client's retry loop ran")

    monkeypatch.setattr(hub_http, "_http_backoff_base", no_backoff)
