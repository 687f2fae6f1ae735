"""The embedded default model loads from the package cache and answers a basic question."""

from __future__ import annotations

from selfdistill.cli import main
from selfdistill.models import DEFAULT_MODEL, embedded_model_dir, load_model


def test_embedded_model_knows_paris(capsys):
    assert (embedded_model_dir() / "model.safetensors").is_file()
    model, tok = load_model(DEFAULT_MODEL)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert main(["generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "24"]) == 0
    assert "Paris" in capsys.readouterr().out


def test_unknown_spec_is_a_user_error(capsys):
    assert main(["generate", "--model", "./no/such/model", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such model directory" in err[0]
