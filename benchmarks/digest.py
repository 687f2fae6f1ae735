"""A run directory's digest: the few numbers the benchmark summaries need from the per-item files that stay out of git.

Each stage's ``metrics.jsonl`` (one row per optimizer step) and ``eval/predictions.jsonl`` (one row per item), and
``base/predictions.jsonl``, are tens of thousands of lines a benchmark; the summaries read only per-step training
diagnostics and how far each greedy answer follows the gold one. ``write_digest`` keeps those in ``digest.json``
beside ``results.json`` (committed), so a fresh clone prints the same tables; it runs after every plan run and keeps
the entries of stages whose files are gone.

    write_digest(Path("benchmarks/results/forgetting/s1"))   # → s1/digest.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from selfdistill.continual.results import load_results, read_metrics_jsonl

DIGEST_FILE = "digest.json"
VERSION = 1
STEP_KEYS = (
    "kl",
    "anchor_kl",
    "teacher_minus_student_logprob",
    "student_entropy",
    "completion_length",
    "seqkd_kept",
)
"""Logged training values kept per optimizer step (None where a step did not log one)."""
AGREEMENT = {
    "first": "first character right",
    "prefix": "share of the gold answer written before the first error",
    "acc": "accuracy",
}
"""How far greedy answers follow the gold answers, each a mean over a task's items."""


def agreement(predictions: Path, task: str) -> dict[str, float]:
    """``AGREEMENT``'s measures (each a mean over the items) of ``task``'s greedy answers in a predictions file."""
    rows = [r for r in map(json.loads, predictions.read_text(encoding="utf-8").splitlines()) if r["task"] == task]
    items = [
        (
            float(r["prediction"].strip()[:1] == r["gold"][:1]),
            len(os.path.commonprefix([r["prediction"].strip(), r["gold"]])) / max(1, len(r["gold"])),
            float(r["scores"]["acc"]),
        )
        for r in rows
    ]
    return {key: sum(values) / len(values) for key, values in zip(AGREEMENT, zip(*items, strict=True), strict=True)}


def training_steps(metrics: Path) -> dict[str, list[float | None]]:
    """``STEP_KEYS`` → one value per optimizer step (a row with a ``loss``) of a stage's ``metrics.jsonl``."""
    rows = [r for r in read_metrics_jsonl(metrics) if "loss" in r]
    return {key: [float(r[key]) if key in r else None for r in rows] for key in STEP_KEYS}


def _stage_entry(run_dir: Path, stage: dict[str, Any]) -> dict[str, Any] | None:
    """A finished stage's digest from its files on disk (what of them is there); None when they are gone."""
    train_dir = run_dir / stage["train_dir"]
    metrics, predictions = train_dir / "metrics.jsonl", train_dir / "eval" / "predictions.jsonl"
    if not (metrics.is_file() or predictions.is_file()):
        return None
    task = stage.get("train_task")
    return {
        "train_task": task,
        "steps": training_steps(metrics) if metrics.is_file() else {},
        "agreement": agreement(predictions, task) if task and predictions.is_file() else {},
    }


def _finished_stages(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [stage for run in results["methods"].values() for stage in run["stages"] if stage.get("train_dir")]


def build_digest(run_dir: Path) -> dict[str, Any]:
    """The digest of ``run_dir``: the stored one, with every stage whose files are on disk read again."""
    run_dir = Path(run_dir)
    stored = read_digest(run_dir)
    results = load_results(run_dir)
    stages = dict(stored.get("stages", {}))
    for stage in _finished_stages(results):
        entry = _stage_entry(run_dir, stage)
        if entry is not None:
            stages[stage["train_dir"]] = entry
    base = dict(stored.get("base", {}))
    if (run_dir / "base" / "predictions.jsonl").is_file():
        base = {task: agreement(run_dir / "base" / "predictions.jsonl", task) for task in results["stage_tasks"]}
    return {"version": VERSION, "stages": stages, "base": base}


def write_digest(run_dir: Path) -> Path:
    path = Path(run_dir) / DIGEST_FILE
    text = json.dumps(build_digest(run_dir), indent=1) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def read_digest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / DIGEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def stage_entries(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``train_dir`` → its stage's digest: from ``digest.json``, or from the files on disk where it has none (a run
    written before digests, or one still going)."""
    stored = read_digest(run_dir).get("stages", {})
    if not (Path(run_dir) / "results.json").is_file():
        return dict(stored)
    missing = [s for s in _finished_stages(load_results(run_dir)) if s["train_dir"] not in stored]
    found = {s["train_dir"]: _stage_entry(Path(run_dir), s) for s in missing}
    return {**stored, **{k: v for k, v in found.items() if v is not None}}


def base_agreement(run_dir: Path, tasks: list[str]) -> dict[str, dict[str, float]]:
    """Task → the base model's ``AGREEMENT`` measures, from ``digest.json`` or ``base/predictions.jsonl``."""
    stored = read_digest(run_dir).get("base", {})
    predictions = Path(run_dir) / "base" / "predictions.jsonl"
    if all(task in stored for task in tasks) or not predictions.is_file():
        return {task: stored[task] for task in tasks if task in stored}
    return {task: agreement(predictions, task) for task in tasks}
