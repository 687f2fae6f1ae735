"""Shared fixtures: tiny data files and the path to the shared evaluation data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

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
