"""Runtime faults: a non-finite loss or gradient, a full disk while checkpointing, and Ctrl-C.

Each fault is injected around the code under test (a loss helper made to return NaN, a disk write made to
fail, a real SIGINT); the training loop, checkpointing and CLI error mapping are the real ones.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from selfdistill.cli import main
from selfdistill.training import checkpoint, losses
from selfdistill.training.checkpoint import list_checkpoints, read_checkpoint

ROWS = [{"prompt": f"What is {i} times 3?", "completion": f"{i} times 3 is {3 * i}."} for i in range(6)]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--output",
        str(out),
        "--model",
        "tiny-random",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "8",
        "--no-progress",
        "--lr",
        "1e-3",
        *extra,
    ]


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _leftovers(out: Path) -> list[str]:
    return [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith((".tmp-", ".old-"))]


@pytest.mark.parametrize("bad", ["loss", "gradient"])
def test_non_finite_step_stops_and_keeps_last_good_checkpoint(bad, data_file, tmp_path, capsys, monkeypatch):
    real_masked_mean, calls = losses.masked_mean, []

    def poisoned(loss_BT, mask_BT):  # sft calls it once per step: poison step 2
        calls.append(1)
        out = real_masked_mean(loss_BT, mask_BT)
        if len(calls) != 2:
            return out
        # NaN value; or a finite value whose gradient is NaN (d/dx sqrt(0·x) = 0.5/0 · 0)
        return out * math.nan if bad == "loss" else out + torch.sqrt(out * 0)

    monkeypatch.setattr(losses, "masked_mean", poisoned)
    out = tmp_path / "run"
    capsys.readouterr()
    code = main(_args(data_file, out, "--method", "sft", "--max-steps", "3", "--save-every", "1"))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 3
    assert "step 2: non-finite loss or gradient" in line and "step-000001" in line
    assert _steps(out) == [1]
    assert [c.name for c in list_checkpoints(out)] == ["step-000001"]
    state, params, _, _ = read_checkpoint(out / "checkpoints" / "step-000001")
    assert state["step"] == 1 and all(torch.isfinite(p).all() for p in params.values())
    assert not (out / "model.safetensors").exists()

    if bad == "gradient":  # the kept checkpoint is a working one: --resume finishes the run
        monkeypatch.setattr(losses, "masked_mean", real_masked_mean)
        code = main(_args(data_file, out, "--method", "sft", "--max-steps", "3", "--save-every", "1", "--resume"))
        assert code == 0 and _steps(out) == [1, 2, 3]


def test_disk_full_while_checkpointing_keeps_previous(data_file, tmp_path, capsys, monkeypatch):
    real_save_file = checkpoint.save_file

    def fills_the_disk(tensors, path, *args, **kwargs):
        real_save_file(tensors, path, *args, **kwargs)
        if "step-000002" in str(path):  # the second checkpoint: half a file lands, then the disk is full
            Path(path).write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint, "save_file", fills_the_disk)
    out = tmp_path / "run"
    capsys.readouterr()
    code = main(_args(data_file, out, "--method", "sft", "--max-steps", "3", "--save-every", "1"))
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "step-000002: cannot write checkpoint (No space left on device)" in line
    assert [c.name for c in list_checkpoints(out)] == ["step-000001"]
    assert _leftovers(out) == []
    state, _, _, _ = read_checkpoint(out / "checkpoints" / "step-000001")
    assert state["step"] == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_saves_a_checkpoint_and_resume_continues(data_file, tmp_path, capsys, signum):
    """A real SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop) mid-run: the step finishes, a checkpoint is written,
    exit 128 + signal; the handlers in place before the run are back afterwards."""
    out = tmp_path / "run"
    steps_file = out / "metrics.jsonl"
    handlers_before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def press_ctrl_c() -> None:  # once the first step is logged
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (steps_file.exists() and steps_file.read_text().strip()):
            time.sleep(0.01)
        os.kill(os.getpid(), signum)

    args = _args(data_file, out, "--method", "sft", "--max-steps", "5", "--save-every", "0")
    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    capsys.readouterr()
    presser.start()
    code = main(args)
    presser.join()
    err = capsys.readouterr().err
    assert code == 128 + signum and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"selfdistill: interrupted ({signal.Signals(signum).name})"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers_before
    saved = list_checkpoints(out)
    assert len(saved) == 1
    stopped_at = read_checkpoint(saved[0])[0]["step"]
    assert 1 <= stopped_at < 5 and _steps(out) == list(range(1, stopped_at + 1))
    assert not (out / "model.safetensors").exists()

    assert main([*args, "--resume"]) == 0
    assert _steps(out) == [1, 2, 3, 4, 5]
    assert (out / "model.safetensors").exists()
