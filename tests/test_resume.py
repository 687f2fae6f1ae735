"""Resume is bit-identical: a run continued from a checkpoint, or SIGKILLed and resumed, ends with the same
student weights, EMA teacher and metrics as one that never stopped. The two-trial version of
``benchmarks/kill_resume.py`` (which runs 20 trials of 30 steps)."""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from selfdistill.cli import main
from selfdistill.training.checkpoint import list_checkpoints

STEPS, SAVE_EVERY = 4, 2
HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_resume.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("kill_resume", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_resume"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


kr = _load_harness()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, in-process (same command line as every trial)."""
    work = tmp_path_factory.mktemp("kill_resume")
    data = kr.write_data(work / "data.jsonl", n=8)
    ref = work / "reference"
    t0 = time.monotonic()
    assert main(kr.train_args(data, ref, STEPS, SAVE_EVERY)) == 0
    est = kr.estimates(ref, STEPS, SAVE_EVERY, time.monotonic() - t0)
    est.run_s = max(est.run_s, 300.0)  # only a timeout here: a fresh interpreter starts slowly on a busy machine
    return work, data, est


def test_resume_from_a_middle_checkpoint_is_bit_identical(reference, tmp_path):
    work, data, est = reference
    out = tmp_path / "resumed"
    shutil.copytree(est.ref, out)
    # as if killed anywhere after step 2's checkpoint: drop what came later
    for ckpt in list_checkpoints(out)[1:]:
        shutil.rmtree(ckpt)
    for f in out.glob("model.safetensors"):
        f.unlink()
    assert [c.name for c in list_checkpoints(out)] == ["step-000002"]
    assert main(kr.train_args(data, out, STEPS, SAVE_EVERY)) == 0  # the command carries --resume
    assert kr.differences(est.ref, out, STEPS) == []


def _cut_to_step_2(src: Path, out: Path) -> Path:
    shutil.copytree(src, out)
    for ckpt in list_checkpoints(out)[1:]:
        shutil.rmtree(ckpt)
    for f in out.glob("model.safetensors"):
        f.unlink()
    return list_checkpoints(out)[0] / "rng.pt"


def test_a_checkpoint_with_one_unlisted_rng_state_still_resumes_bit_identically(reference, tmp_path):
    work, data, est = reference
    out = tmp_path / "old_format"
    rng_file = _cut_to_step_2(est.ref, out)
    saved = torch.load(rng_file, weights_only=True)
    assert len(saved["ranks"]) == 1, "a one-process run saves one RNG state"
    torch.save(saved["ranks"][0], rng_file)  # how checkpoints were written before states were per rank
    assert main(kr.train_args(data, out, STEPS, SAVE_EVERY)) == 0
    assert kr.differences(est.ref, out, STEPS) == []


def test_resuming_at_another_number_of_ranks_says_the_sampling_reseeds(reference, tmp_path, caplog):
    work, data, est = reference
    out = tmp_path / "two_ranks"
    rng_file = _cut_to_step_2(est.ref, out)
    saved = torch.load(rng_file, weights_only=True)
    torch.save({"ranks": saved["ranks"] * 2}, rng_file)  # as a 2-process run would have saved it
    with caplog.at_level("WARNING", logger="selfdistill"):
        assert main(kr.train_args(data, out, STEPS, SAVE_EVERY)) == 0
    assert "saved by 2 process(es), this run has 1" in caplog.text


def test_two_sigkill_trials_are_bit_identical(reference):
    """SIGKILL one CLI process mid-checkpoint-write and one mid-training, resume each, compare with torch.equal.

    The two kills run at once (interpreter start-up dominates); the resumes run in-process, one after the other.
    """
    work, data, est = reference
    env = kr.child_env(torch.get_num_threads())
    trials = {mode: work / f"trial-{mode}" for mode in ("checkpoint", "training")}
    kills: dict[str, str] = {}

    # "training" kills up to 1.5 x save_every x step_s after a step: halve step_s so 4 steps cannot finish first
    soon = dataclasses.replace(est, step_s=est.step_s / 2)

    def kill(mode: str) -> None:
        proc = kr.launch(kr.train_args(data, trials[mode], STEPS, SAVE_EVERY), work / f"{mode}.log", env)
        kills[mode] = kr.kill_once(proc, trials[mode], mode, random.Random(0), soon)

    threads = [threading.Thread(target=kill, args=(mode,)) for mode in trials]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for mode, out in trials.items():
        log = (work / f"{mode}.log").read_text()
        assert kills[mode], f"{mode}: the process ended before it could be killed:\n{log}"
        assert kr.unloadable_checkpoints(out) == []
        assert main(kr.train_args(data, out, STEPS, SAVE_EVERY)) == 0
        assert kr.differences(est.ref, out, STEPS) == [], f"{mode}: killed {kills[mode]}"
