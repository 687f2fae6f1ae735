"""The one schema of a continual run's ``results.json``, as dataclasses, and reading a run directory.

    results = Results.load(Path("runs/demo"))          # shape-checked; errors are one line naming the file
    results.runs["sdft@seed1"].stages[1].eval["skill_a"].value()

``results.json`` (rewritten by the continual runner after every stage)::

    {"version": 1, "model": "smollm2-135m-instruct", "eval_split": "test",
     "stage_tasks": ["skill_a", "skill_b"],       # trained in this order; the columns of the matrix R
     "near_tasks": ["near_skill_a"],              # the base model's skills on the stage tasks' surface
     "prior_tasks": ["prior_probe", "arc_easy"],  # what the model could do before; measured after every stage
     "settings": ["sft", "sdft[lr=3e-5]"],        # the plan's settings, in plan order
     "methods": {                                 # one entry per run (a setting trained with one seed)
       "sdft[lr=3e-5]@seed1": {"setting": "sdft[lr=3e-5]", "seed": 1, "config": {"method": "sdft", ...},
         "stages": [                              # stage 0 is the base model; a run in progress has fewer
           {"index": 0, "name": "base", "train_task": null, "train_dir": null, "train_seconds": 0.0,
            "eval": {"skill_a": {"metrics": {"acc": 0.1}, "stderr": {"acc": 0.02}, "n": 50, "primary": "acc",
                                 "seconds": 3.1}, ...one entry per stage, near and prior task...}},
           {"index": 1, "name": "skill_a", "train_task": "skill_a", "train_dir": "sdft[lr=3e-5]@seed1/stage1-skill_a",
            "train_seconds": 120.0, "eval": {...}}, ...]}}}

``train_dir`` is relative to the run directory and holds ``metrics.jsonl``: one JSON object per optimizer step.
A stage trained with ``eval_every`` also has ``training_evals`` (``[{"step", "selection", "guards": {name: score}}]``),
``kept_step``, ``budget``, ``guards`` (``{name: {"origin", "n", "resolution", "base", "test_base"}}``: each guard's
items and the references its drop is measured from) and, where the kept model was tested, ``kept_test`` and
``test_base`` (``{"step", "selection", "guards"}``), read from the stage's ``selection.json``.
Files written before a field existed still load: a run without ``setting`` is a setting of its own, one without
``seed`` is numbered by its place among its setting's runs. Optional fields are written only when set, so a file
reads back as it was written.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from selfdistill.errors import UserError
from selfdistill.fileio import write_json_atomic

RESULTS_FILE = "results.json"
RESULTS_VERSION = 1
"""The schema version this code writes; files of a newer version are refused rather than misread."""


class ResultsError(UserError):
    """A ``results.json`` that cannot be read or has the wrong shape; the message names the file."""


@dataclass
class TaskScore:
    """One task's scores after one stage (the per-task entry ``evaluate_tasks`` returns)."""

    metrics: dict[str, float]
    """Metric name → mean over the evaluated items."""
    stderr: dict[str, float | None]
    """Metric name → standard error of that mean (None where undefined, e.g. one item)."""
    n: int
    """Items evaluated."""
    primary: str
    """The metric that stands for the task (the accuracy matrix's cell)."""
    seconds: float | None = None
    """Evaluation wall time."""

    def value(self, kind: Literal["metrics", "stderr"] = "metrics") -> float:
        """The primary metric (or its stderr); NaN when it is missing or not a number."""
        number = (self.metrics if kind == "metrics" else self.stderr).get(self.primary)
        return float(number) if isinstance(number, int | float) else math.nan

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaskScore:
        return cls(
            metrics=dict(raw.get("metrics") or {}),
            stderr=dict(raw.get("stderr") or {}),
            n=int(raw.get("n") or 0),
            primary=str(raw.get("primary") or ""),
            seconds=raw.get("seconds"),
        )

    def to_json(self) -> dict[str, Any]:
        out = {"metrics": self.metrics, "stderr": self.stderr, "n": self.n, "primary": self.primary}
        return out if self.seconds is None else {**out, "seconds": self.seconds}


@dataclass
class TrainingEval:
    """An evaluation during a stage's training (written once training evaluates every few steps)."""

    step: int
    """Optimizer step of the evaluated weights."""
    selection: float | None = None
    """The score that picks the kept step (higher is better)."""
    guards: dict[str, float] = field(default_factory=dict)
    """Guard task → primary score: what must not be lost beyond the forgetting budget."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainingEval:
        return cls(int(raw["step"]), raw.get("selection"), dict(raw.get("guards") or {}))

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "selection": self.selection, "guards": self.guards}


@dataclass
class GuardRecord:
    """One guard of a stage trained with a forgetting budget: how fine it measures, and what it is measured from."""

    origin: str
    """Why it guards: prior, near (the skill's near-prior task), drift (log-likelihood), keep (--keep or an earlier
    plan stage)."""
    n: int
    """Selection items scored at each evaluation point (0: a continuous score)."""
    resolution: float
    """What one item is worth, 1/n (0 for a continuous score): the smallest drop the guard can show."""
    base: float | None = None
    """The reference its drop is measured from (the plan's start model, or an earlier skill's stage-end score)."""
    test_base: float | None = None
    """The start model's score on the guard's test items (the reference of the kept model's test-side drop)."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> GuardRecord:
        n = int(raw.get("n") or 0)
        return cls(
            str(raw.get("origin") or ""), n, float(raw.get("resolution") or 0.0), raw.get("base"), raw.get("test_base")
        )

    def to_json(self) -> dict[str, Any]:
        out = {"origin": self.origin, "n": self.n, "resolution": self.resolution, "base": self.base}
        return out if self.test_base is None else {**out, "test_base": self.test_base}


@dataclass
class StageRecord:
    """One finished stage of one run: what was trained, for how long, and every task's scores afterwards."""

    index: int
    """0 for the base model, k for the model after the k-th stage: the row of the accuracy matrix."""
    name: str
    """The stage's task column, or ``base``."""
    train_task: str | None
    """What the stage trained on (a task name or a data file); None for the base model."""
    train_dir: str | None
    """The stage's training output, relative to the run directory (holds ``metrics.jsonl``)."""
    train_seconds: float
    """Wall time of the stage's training."""
    eval: dict[str, TaskScore]
    """Task column → its scores after this stage."""
    kept_step: int | None = None
    """The training step whose weights the stage handed on (None: its last step)."""
    training_evals: list[TrainingEval] = field(default_factory=list)
    """Evaluations during the stage's training, in step order."""
    budget: float | None = None
    """The forgetting budget the kept step was chosen under (None: evaluated without a budget)."""
    guards: dict[str, GuardRecord] = field(default_factory=dict)
    """Guard name → its items and references, for the stages trained with ``eval_every``."""
    kept_test: TrainingEval | None = None
    """The kept model scored on the test items (the task's test split and the guards' test items)."""
    test_base: TrainingEval | None = None
    """The stage's start model on the same test items (step 0): what the test-side drops are measured from."""
    drift_loglik: dict[str, float | None] | None = None
    """The drift guard's reference log-likelihoods (``{"selection", "test"}``, nats per token), handed on to later
    stages so the drift guard too is measured from the plan's start model."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StageRecord:
        return cls(
            index=int(raw["index"]),
            name=str(raw.get("name", raw["index"])),
            train_task=raw.get("train_task"),
            train_dir=raw.get("train_dir"),
            train_seconds=float(raw.get("train_seconds") or 0.0),
            eval={task: TaskScore.from_json(entry or {}) for task, entry in (raw.get("eval") or {}).items()},
            kept_step=raw.get("kept_step"),
            training_evals=[TrainingEval.from_json(e) for e in raw.get("training_evals") or []],
            budget=raw.get("budget"),
            guards={name: GuardRecord.from_json(g) for name, g in (raw.get("guards") or {}).items()},
            kept_test=TrainingEval.from_json(raw["kept_test"]) if raw.get("kept_test") else None,
            test_base=TrainingEval.from_json(raw["test_base"]) if raw.get("test_base") else None,
            drift_loglik=raw.get("drift_loglik"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "train_task": self.train_task,
            "train_dir": self.train_dir,
            "train_seconds": self.train_seconds,
            "eval": {task: score.to_json() for task, score in self.eval.items()},
        }
        if self.kept_step is not None:
            out["kept_step"] = self.kept_step
        if self.training_evals:
            out["training_evals"] = [e.to_json() for e in self.training_evals]
        if self.budget is not None:
            out["budget"] = self.budget
        if self.guards:
            out["guards"] = {name: guard.to_json() for name, guard in self.guards.items()}
        for key, point in (("kept_test", self.kept_test), ("test_base", self.test_base)):
            if point is not None:
                out[key] = point.to_json()
        if self.drift_loglik is not None:
            out["drift_loglik"] = self.drift_loglik
        return out


@dataclass
class RunRecord:
    """One run: a setting (a method with its overrides and sweep point) trained with one seed, stage by stage."""

    setting: str
    """The setting label (``sdft[lr=3e-5]``); runs of one setting differ only in their seed."""
    seed: int | None
    """The training seed (None in files written before seeds were recorded)."""
    config: dict[str, Any]
    """The setting's TrainConfig overrides; ``method`` is always among them."""
    stages: list[StageRecord] = field(default_factory=list)
    """Finished stages, stage 0 (the base model) first."""

    @property
    def method(self) -> str | None:
        """sdft, sft or seqkd."""
        return self.config.get("method")

    @property
    def ordered_stages(self) -> list[StageRecord]:
        return sorted(self.stages, key=lambda stage: stage.index)

    def stage(self, index: int) -> StageRecord | None:
        return next((s for s in self.stages if s.index == index), None)

    @classmethod
    def from_json(cls, label: str, raw: dict[str, Any]) -> RunRecord:
        stages = [StageRecord.from_json(s) for s in raw["stages"]]
        return cls(str(raw.get("setting") or label), raw.get("seed"), dict(raw.get("config") or {}), stages)

    def to_json(self) -> dict[str, Any]:
        stages = [s.to_json() for s in self.stages]
        return {"setting": self.setting, "seed": self.seed, "config": self.config, "stages": stages}


@dataclass
class Results:
    """A continual run directory's ``results.json``: the tasks, and every run's stages."""

    stage_tasks: list[str]
    """Trained in this order; the columns of the accuracy matrix R."""
    prior_tasks: list[str] = field(default_factory=list)
    """What the model could do before training; measured after every stage."""
    near_tasks: list[str] = field(default_factory=list)
    """The base model's skills on the stage tasks' surface, reported apart from the prior tasks."""
    runs: dict[str, RunRecord] = field(default_factory=dict)
    """Run label (``sdft[lr=3e-5]@seed1``, or the setting alone) → its record; ``methods`` in the file."""
    settings: list[str] = field(default_factory=list)
    """The plan's settings in plan order (the first is the reference of paired comparisons)."""
    model: str | None = None
    """The base model spec."""
    eval_split: Literal["test", "validation"] = "test"
    """Which split of the stage tasks was scored."""
    version: int = RESULTS_VERSION
    """Schema version of the file."""

    @property
    def columns(self) -> list[str]:
        """Every evaluated task column: stage tasks, then near-prior, then prior tasks."""
        return [*self.stage_tasks, *self.near_tasks, *self.prior_tasks]

    def settings_of(self) -> dict[str, list[str]]:
        """Setting label → its run labels, in results order."""
        out: dict[str, list[str]] = {}
        for label, run in self.runs.items():
            out.setdefault(run.setting, []).append(label)
        return out

    @classmethod
    def from_json(cls, raw: Any, where: str = RESULTS_FILE) -> Results:
        """Shape-check a decoded ``results.json``; a ResultsError names ``where`` and the field."""
        if not isinstance(raw, dict):
            raise ResultsError(f"{where}: expected a JSON object at the top level")
        for key, kind in (("stage_tasks", list), ("prior_tasks", list), ("near_tasks", list), ("methods", dict)):
            if not isinstance(raw.get(key, kind()), kind):
                raise ResultsError(f"{where}: field '{key}' must be a {'list' if kind is list else 'object'}")
        version = raw.get("version", 1)
        if not isinstance(version, int) or version > RESULTS_VERSION:
            raise ResultsError(f"{where}: schema version {version!r} is newer than this selfdistill reads")
        for name, run in (raw.get("methods") or {}).items():
            stages = run.get("stages") if isinstance(run, dict) else None
            if not isinstance(stages, list) or not all(
                isinstance(s, dict) and isinstance(s.get("index"), int) for s in stages
            ):
                raise ResultsError(f"{where}: methods.{name}.stages must be a list of objects with an integer 'index'")
        runs = {}
        for label, run in (raw.get("methods") or {}).items():
            try:
                runs[label] = RunRecord.from_json(label, run)
            except (AttributeError, KeyError, TypeError, ValueError) as error:  # a field of the wrong kind
                raise ResultsError(f"{where}: methods.{label}: cannot read a stage ({error!r})") from None
        return cls(
            stage_tasks=list(raw.get("stage_tasks") or []),
            prior_tasks=list(raw.get("prior_tasks") or []),
            near_tasks=list(raw.get("near_tasks") or []),
            runs=runs,
            settings=list(raw.get("settings") or []),
            model=raw.get("model"),
            eval_split=raw.get("eval_split") or "test",
            version=version,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model": self.model,
            "eval_split": self.eval_split,
            "stage_tasks": self.stage_tasks,
            "near_tasks": self.near_tasks,
            "prior_tasks": self.prior_tasks,
            "settings": self.settings,
            "methods": {label: run.to_json() for label, run in self.runs.items()},
        }

    @classmethod
    def load(cls, run_dir: Path) -> Results:
        """Read and shape-check ``run_dir/results.json``; errors are one line naming the file."""
        path = Path(run_dir) / RESULTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (is {run_dir} a continual run directory?)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ResultsError(f"{path}: not valid JSON ({error})") from None
        return cls.from_json(raw, str(path))

    def save(self, run_dir: Path) -> None:
        """Write ``run_dir/results.json`` atomically: a killed run leaves the previous results."""
        write_json_atomic(Path(run_dir) / RESULTS_FILE, self.to_json(), indent=1)


def as_results(results: Results | dict[str, Any]) -> Results:
    """``results`` typed: a decoded ``results.json`` (or a hand-made one in a test) is read through the schema."""
    return results if isinstance(results, Results) else Results.from_json(results)


def load_results(run_dir: Path) -> dict[str, Any]:
    """``results.json`` checked against the schema and completed with its defaults, as plain JSON data (for
    scripts that index it); ``Results.load`` gives the typed form."""
    return Results.load(run_dir).to_json()


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; a missing file is empty and a torn line (a run still writing) is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return [row for row in rows if isinstance(row, dict)]


def stage_label(index: int, tasks: Sequence[str]) -> str:
    name = tasks[index - 1] if 0 < index <= len(tasks) else f"stage {index}"
    return "base" if index == 0 else f"after {name}"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def fmt_num(value: float, signed: bool = False) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.3f}" if signed else f"{value:.3f}"
