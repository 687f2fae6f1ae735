"""Data parallel for real: two gloo processes under torchrun on this CPU, against one process on the same global
batch. No mocks of torch.distributed."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
COMMON = [
    "train",
    "--model",
    "tiny-random",
    "--max-new-tokens",
    "8",
    "--no-progress",
    "--lr",
    "1e-3",
    "--batch-size",
    "8",
]


def _run(
    args: list[str], tmp_path: Path, ranks: int, digest: Path | None = None, script_name: str = "digest_run.py"
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = [str(HERE / "dist" / script_name)] if digest else ["-m", "selfdistill"]
    if digest:
        digest.mkdir(exist_ok=True)
        env["DIGEST_DIR"] = str(digest)
    cmd = (TORCHRUN if ranks > 1 else [sys.executable]) + script + COMMON + args
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_of_four_rows_equal_one_process_of_eight_for_sft(tmp_path, small_jsonl):
    data = ["--data", str(small_jsonl), "--method", "sft", "--max-steps", "3", "--precision", "fp32"]
    _run([*data, "--output", str(tmp_path / "one")], tmp_path, ranks=1)
    _run([*data, "--output", str(tmp_path / "two")], tmp_path, ranks=2)
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3], "one metrics row per step, not one per rank"
    for a, b in zip(one, two, strict=True):
        # the gradient norm is what catches summed instead of averaged gradients (2x here); AdamW's update is
        # nearly scale-free, so the weights alone would not
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["grad_norm"] == pytest.approx(
            a["grad_norm"], rel=1e-4
        )
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert w1.keys() == w2.keys()
    for name in w1:  # reduction order moves the last bits; AdamW turns that into ~1e-6 (lr is 1e-3 per step)
        torch.testing.assert_close(w2[name], w1[name], rtol=0, atol=2e-5, msg=name)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "two")  # the output loads like any HF model


def test_sdft_rollouts_do_not_depend_on_the_rank_count(tmp_path, small_jsonl):
    """Each row samples from a stream seeded by (seed, micro-batch, position), so 2 x 4 rows sample what 1 x 8 rows
    do, and the on-policy run itself (loss, gradient norm, completion lengths) is the same at either rank count."""
    data = ["--data", str(small_jsonl), "--method", "sdft", "--max-steps", "3", "--precision", "fp32"]
    _run([*data, "--output", str(tmp_path / "one")], tmp_path, ranks=1)
    _run([*data, "--output", str(tmp_path / "two")], tmp_path, ranks=2)
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        assert b["completion_length"] == a["completion_length"]
        # the KL here is ~1e-3, a difference of fp32 log-probs of size ~10: the head's matmuls over other row
        # counts move it by a few 1e-7 (abs), far below what a wrong rollout or a missing loss scale would
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")
def test_vllm_rollouts_at_two_ranks_equal_one_rank(tmp_path, small_jsonl):
    """Each torchrun rank runs its own in-process vLLM engine (external_launcher) on its share of the batch, synced
    after every step; per-row seeds make the on-policy run the same as one process with one engine. A rank whose
    engine missed a sync would sample from older weights than rank 0 and its TIS log-prob gap would show it."""
    data = [
        "--data",
        str(small_jsonl),
        "--method",
        "sdft",
        "--max-steps",
        "3",
        "--precision",
        "fp32",
        "--rollout",
        "vllm",
    ]
    _run([*data, "--output", str(tmp_path / "one")], tmp_path, ranks=1)
    _run([*data, "--output", str(tmp_path / "two")], tmp_path, ranks=2)
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(one, two, strict=True):
        assert b["completion_length"] == a["completion_length"]
        # the KL here is ~1e-3, a difference of fp32 log-probs of size ~10: the head's matmuls over other row
        # counts move it by a few 1e-7 (abs), far below what a wrong rollout or a missing loss scale would
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        assert b["tis_logprob_gap"] < 1e-4, b


def test_sdft_ranks_hold_identical_student_and_teacher_after_every_step(tmp_path, small_jsonl):
    digest = tmp_path / "digest"
    args = ["--data", str(small_jsonl), "--method", "sdft", "--max-steps", "3", "--output", str(tmp_path / "out")]
    _run(args, tmp_path, ranks=2, digest=digest)
    rank0 = (digest / "rank0.jsonl").read_text().splitlines()
    rank1 = (digest / "rank1.jsonl").read_text().splitlines()
    assert len(rank0) == 3 and rank0 == rank1
    assert len({json.loads(r)["student"] for r in rank0}) == 3, "the student must move every step"


def test_micro_batches_before_the_last_skip_the_all_reduce(tmp_path, small_jsonl):
    """--grad-accum 2 under DDP: the first micro-batch keeps its gradients local (no_sync), so each gradient bucket
    is all-reduced once per optimizer step, not once per micro-batch; the run still equals one process."""
    digest = tmp_path / "reduced"
    data = ["--data", str(small_jsonl), "--method", "sft", "--max-steps", "2", "--precision", "fp32"]
    data += ["--grad-accum", "2"]
    _run([*data, "--output", str(tmp_path / "one")], tmp_path, ranks=1)
    _run(
        [*data, "--output", str(tmp_path / "two")], tmp_path, ranks=2, digest=digest, script_name="count_reductions.py"
    )
    for rank in (0, 1):
        reduced = json.loads((digest / f"rank{rank}.json").read_text())
        assert reduced and set(reduced.values()) == {2}, reduced  # 2 steps x 2 micro-batches: 2 all-reduces, not 4
    for a, b in zip(_rows(tmp_path / "one"), _rows(tmp_path / "two"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # the accumulated sum was averaged once


def test_resume_at_two_ranks_continues_the_same_run(tmp_path, small_jsonl):
    # sdft: each rank samples its own rows, so the resumed run matches only if every rank gets back its own RNG
    data = [
        "--data",
        str(small_jsonl),
        "--method",
        "sdft",
        "--save-every",
        "1",
        "--keep-checkpoints",
        "4",
        "--precision",
        "fp32",
    ]
    _run([*data, "--max-steps", "4", "--output", str(tmp_path / "straight")], tmp_path, ranks=2)
    _run([*data, "--max-steps", "4", "--output", str(tmp_path / "split")], tmp_path, ranks=2)
    # cut the second run back to its step-2 checkpoint, as a kill after step 2 would leave it, then resume
    split = tmp_path / "split"
    later = [c for c in sorted((split / "checkpoints").iterdir()) if c.name > "step-000002"]
    assert [c.name for c in later] == ["step-000003", "step-000004"]
    for ckpt in later:
        shutil.rmtree(ckpt)
    (split / "model.safetensors").unlink()
    done = _run([*data, "--max-steps", "4", "--output", str(split), "--resume"], tmp_path, ranks=2)
    assert "at step 2" in done.stdout + done.stderr, "the run must resume from the step-2 checkpoint"
    assert [r["step"] for r in _rows(split)] == [1, 2, 3, 4]
    a, b = _weights(tmp_path / "straight"), _weights(split)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_batch_the_ranks_cannot_share_is_one_line_and_exit_2(tmp_path, small_jsonl):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        *TORCHRUN,
        "-m",
        "selfdistill",
        *COMMON[:-2],
        "--batch-size",
        "1",
        "--data",
        str(small_jsonl),
        "--output",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "batch-size: a micro-batch of 1 examples cannot give each of 2 processes a row" in done.stderr
    assert not (tmp_path / "out").exists()
