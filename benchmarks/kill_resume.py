"""Kill-and-resume harness: SIGKILL tiny-random SDFT runs at random moments, resume them, compare bit for bit.

    .venv/bin/python benchmarks/kill_resume.py --trials 20 --steps 30 --save-every 3

First one uninterrupted CLI run (the reference). Then each trial launches the same command with ``--resume``
and SIGKILLs it one or more times, at a random moment (``anytime``: from process start, so kills land in
imports, setup and training; ``training``: a random time after this launch finished a step; ``checkpoint``:
the instant a checkpoint's ``.tmp-`` directory appears, i.e. mid-write), checks after every kill that each
complete checkpoint on disk reads back, then lets a last ``--resume`` finish. A trial is identical when the
final checkpoint's student weights and EMA teacher and the saved model are ``torch.equal`` to the reference's,
and ``metrics.jsonl`` holds steps 1..N once each with the reference's values (timings aside).
A trial whose run outran all its kills is redrawn (up to 3 times), so every counted trial was killed at least
once. Prints ``identical K/N``; exits 1 unless every trial is identical and every checkpoint loaded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro
from safetensors.torch import load_file

from selfdistill.training.checkpoint import CHECKPOINTS, list_checkpoints, read_checkpoint

MODES = ("anytime", "training", "checkpoint")


def _timing(key: str) -> bool:
    """Wall-clock keys (seconds_per_step and the per-phase seconds_*): they differ between any two runs."""
    return key.startswith("seconds_")


def write_data(path: Path, n: int = 16) -> Path:
    rows = [
        {"prompt": f"What is {i} plus {2 * i + 1}?", "completion": f"{i} plus {2 * i + 1} is {3 * i + 1}."}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_args(data: Path, out: Path, steps: int, save_every: int) -> list[str]:
    """The CLI command of every launch; `--resume` on the first one too (a missing output dir starts a run)."""
    return [
        "train",
        "--model",
        "tiny-random",
        "--data",
        str(data),
        "--output",
        str(out),
        "--max-steps",
        str(steps),
        "--save-every",
        str(save_every),
        "--batch-size",
        "2",
        "--max-new-tokens",
        "8",
        "--lr",
        "1e-4",
        "--seed",
        "1",
        "--no-progress",
        "--resume",
    ]


def child_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def launch(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("a") as fh:
        fh.write(f"\n$ selfdistill {' '.join(args)}\n")
        fh.flush()
        return subprocess.Popen([sys.executable, "-m", "selfdistill.cli", *args], stdout=fh, stderr=fh, env=env)


def run_to_end(args: list[str], log: Path, env: dict[str, str]) -> int:
    return launch(args, log, env).wait()


@dataclass
class Estimate:
    """The reference run, and its timings that place the kills."""

    ref: Path
    steps: int
    save_every: int
    run_s: float
    step_s: float


def _metric_lines(out: Path) -> int:
    path = out / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait(proc: subprocess.Popen, until: Callable[[], bool], timeout: float) -> bool:
    """Poll every 2 ms until ``until()`` holds (True) or the process exits / time runs out (False)."""
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if until():
            return True
        time.sleep(0.002)
    return False


def _tmp_dirs(out: Path) -> set[str]:
    root = out / CHECKPOINTS
    return {p.name for p in root.iterdir() if p.name.startswith(".tmp-")} if root.is_dir() else set()


def kill_once(proc: subprocess.Popen, out: Path, mode: str, rng: random.Random, est: Estimate) -> str:
    """SIGKILL ``proc`` at a moment chosen by ``mode``; describe where, or '' if it finished first."""
    started, stale = time.monotonic(), _tmp_dirs(out)
    if mode == "anytime":
        _wait(proc, lambda: False, rng.uniform(0, 0.8 * est.run_s))
    elif mode == "training":
        lines = _metric_lines(out)
        if _wait(proc, lambda: _metric_lines(out) > lines, est.run_s * 2):
            _wait(proc, lambda: False, rng.uniform(0, 1.5 * est.save_every * est.step_s))
    else:
        _wait(proc, lambda: bool(_tmp_dirs(out) - stale), est.run_s * 2)
    if proc.poll() is not None:
        return ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mid_write = ", mid-write" if _tmp_dirs(out) - stale else ""
    return f"{mode}@{time.monotonic() - started:.1f}s (after step {_metric_lines(out)}{mid_write})"


def unloadable_checkpoints(out: Path) -> list[str]:
    bad = []
    for ckpt in list_checkpoints(out):
        try:
            read_checkpoint(ckpt)
        except Exception as err:
            bad.append(f"{ckpt}: {type(err).__name__}: {str(err)[:200]}")
    return bad


def differences(ref: Path, out: Path, steps: int) -> list[str]:
    """What differs between a trial's final state and the reference's (empty: bit-identical)."""
    problems = []
    final = f"{CHECKPOINTS}/step-{steps:06d}"
    for rel in (f"{final}/trainable.safetensors", f"{final}/teacher.safetensors", "model.safetensors"):
        if not (out / rel).is_file():
            problems.append(f"{rel} missing")
            continue
        a, b = load_file(ref / rel), load_file(out / rel)
        if a.keys() != b.keys():
            problems.append(f"{rel}: tensor names differ")
            continue
        diff = [k for k in a if not torch.equal(a[k], b[k])]
        if diff:
            problems.append(f"{rel}: {len(diff)}/{len(a)} tensors differ (e.g. {diff[0]})")
    ref_records = [json.loads(ln) for ln in (ref / "metrics.jsonl").read_text().splitlines()]
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    if [r["step"] for r in records] != list(range(1, steps + 1)):
        problems.append(f"metrics.jsonl steps are {[r['step'] for r in records]}")
    else:
        for a, b in zip(ref_records, records, strict=True):
            if {k: v for k, v in a.items() if not _timing(k)} != {k: v for k, v in b.items() if not _timing(k)}:
                problems.append(f"metrics.jsonl step {a['step']} differs")
                break
    return problems


@dataclass
class Trial:
    index: int
    kills: list[str] = field(default_factory=list)
    launches: int = 0
    unloadable: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def identical(self) -> bool:
        return not self.problems and not self.unloadable


def run_trial(
    index: int,
    args: list[str],
    out: Path,
    log: Path,
    rng: random.Random,
    est: Estimate,
    env: dict[str, str],
    *,
    modes: list[str],
    finish: Callable[[list[str]], int] | None = None,
) -> Trial:
    """Kill one launch per entry of ``modes``, then resume to the end (``finish``: in-process, for tests)."""
    trial, t0 = Trial(index), time.monotonic()
    for mode in modes:
        proc, started = launch(args, log, env), time.monotonic()
        trial.launches += 1
        where = kill_once(proc, out, mode, rng, est)
        if not where:  # it finished (or failed) before the kill
            if proc.returncode != 0:
                trial.problems.append(f"launch {trial.launches} exited {proc.returncode} (see {log})")
            elif trial.launches == 1:  # a whole run: the machine's pace now, for the next kill times
                est.run_s = time.monotonic() - started
            break
        trial.kills.append(where)
        trial.unloadable += unloadable_checkpoints(out)
    else:
        trial.launches += 1
        rc = finish(args) if finish else run_to_end(args, log, env)
        if rc != 0:
            trial.problems.append(f"final resume exited {rc} (see {log})")
    if not trial.problems:
        trial.problems += differences(est.ref, out, est.steps)
    trial.seconds = time.monotonic() - t0
    return trial


def reference_run(work: Path, data: Path, steps: int, save_every: int, env: dict[str, str]) -> Estimate:
    """Run uninterrupted; return the timing estimates the kill modes need."""
    ref = work / "reference"
    t0 = time.monotonic()
    rc = run_to_end(train_args(data, ref, steps, save_every), work / "reference.log", env)
    if rc != 0:
        raise SystemExit(f"reference run failed ({rc}); see {work / 'reference.log'}")
    return estimates(ref, steps, save_every, time.monotonic() - t0)


def estimates(ref: Path, steps: int, save_every: int, run_s: float) -> Estimate:
    records = [json.loads(ln) for ln in (ref / "metrics.jsonl").read_text().splitlines()]
    step_s = sum(r["seconds_per_step"] for r in records) / len(records)
    return Estimate(ref, steps, save_every, run_s, step_s)


@dataclass
class Args:
    """Kill-and-resume harness: SIGKILL tiny-random SDFT runs at random moments, resume them, compare bit for bit."""

    trials: int = 20
    """Trials, each killed one or more times and resumed to the end."""
    steps: int = 30
    """Training steps of every run."""
    save_every: int = 3
    """Checkpoint every this many steps."""
    max_kills: int = 3
    """Kills per trial: 1..max, drawn at random."""
    seed: int = 0
    """Seed of the kill schedule (not of training)."""
    threads: int = field(default_factory=torch.get_num_threads)
    """OMP threads per run (default: torch's)."""
    workdir: Path | None = None
    """Where the runs go (default: a temporary directory, removed when every trial is identical)."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill_resume-"))
    work.mkdir(parents=True, exist_ok=True)
    env = child_env(args.threads)
    rng = random.Random(args.seed)
    data = write_data(work / "data.jsonl")
    t0 = time.monotonic()
    est = reference_run(work, data, args.steps, args.save_every, env)
    print(
        f"reference: {args.steps} steps in {est.run_s:.0f} s ({est.step_s:.1f} s/step), "
        f"{args.threads} threads, workdir {work}",
        flush=True,
    )
    trials = []
    for i in range(args.trials):
        out = work / f"trial-{i:02d}"
        log = work / f"trial-{i:02d}.log"
        for _attempt in range(3):  # a trial counts once it was killed: redraw if the run outran its kill
            shutil.rmtree(out, ignore_errors=True)
            modes = [rng.choice(MODES) for _ in range(rng.randint(1, args.max_kills))]
            if i % 4 == 0:
                modes[0] = "checkpoint"  # at least a quarter of the trials start with a kill mid-write
            trial = run_trial(
                i, train_args(data, out, args.steps, args.save_every), out, log, rng, est, env, modes=modes
            )
            if trial.kills or not trial.identical:
                break
        trials.append(trial)
        verdict = "identical" if trial.identical else "DIFFERENT: " + "; ".join(trial.problems + trial.unloadable)
        print(
            f"trial {i:2d}: {trial.launches} launches, kills [{', '.join(trial.kills)}] "
            f"{trial.seconds:.0f} s -> {verdict}",
            flush=True,
        )
    same = sum(t.identical for t in trials)
    kills = [k for t in trials for k in t.kills]
    mid_write = sum("mid-write" in k for k in kills)
    unloadable = [u for t in trials for u in t.unloadable]
    print(
        f"identical {same}/{len(trials)} | trials killed {sum(bool(t.kills) for t in trials)}/{len(trials)} | "
        f"{len(kills)} kills ({mid_write} mid-checkpoint-write) | "
        f"unloadable checkpoints: {len(unloadable)} | wall {time.monotonic() - t0:.0f} s"
    )
    for u in unloadable:
        print(f"  unloadable: {u}")
    if args.workdir is None and same == len(trials):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if same == len(trials) and not unloadable else 1


if __name__ == "__main__":
    sys.exit(main())
