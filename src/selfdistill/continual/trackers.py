"""What a continual run sends to experiment trackers (a plan's ``report_to``, or ``continual --report-to``).

    with open_run(names, plan, run) as tracked:      # OUTPUT/<run>: one tracker run per plan run
        log_stage(tracked, entry)                    # after every stage (0 = the base model): eval/<task>/<metric>
        log_run_end(tracked, plan.output, results, run.label)   # the run's accuracy matrix and its plots
    log_report(names, plan, report)                  # OUTPUT: report.md and the plots every run shares

``results.json`` stays the source of truth. Each tracker run is written from it again on every (re)run, so a
resumed plan's tracker runs hold every stage, not only the ones this process trained; TensorBoard's old event files
for these runs are deleted first so no point appears twice.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from selfdistill.continual.metrics import matrix_from_results
from selfdistill.continual.plan import Plan, Run, run_dir_name
from selfdistill.continual.results import Results, StageRecord, safe_name, stage_label
from selfdistill.evaluation.evaluate import tracker_scalars
from selfdistill.training import trackers
from selfdistill.training.trackers import Trackers

SHARED_PLOTS = ("accuracy_by_stage", "pareto")
"""The report's plots drawn from every run at once (logged to the plan's tracker run; the rest go to each run's)."""


def tracker_names(plan: Plan, cli: list[str]) -> list[str]:
    """The plan-level trackers (the plan's ``report_to`` and the command line's), after checking that every tracker
    the plan names anywhere, stage trainings' ``train.report_to`` included, is installed: exit 2 before any work."""
    names = list(dict.fromkeys([*plan.report_to, *cli]))
    per_stage = [n for s in plan.methods.values() for n in s.get("report_to", [])]
    per_stage += [n for stage in plan.stages for n in stage.train.get("report_to", [])]
    trackers.require(names + per_stage)
    return names


def _fresh(names: list[str], out: Path) -> None:
    if "tensorboard" in names:
        shutil.rmtree(out / "tensorboard", ignore_errors=True)  # the whole run is logged again from results.json


def _title(plan: Plan) -> str:
    return plan.output.resolve().name


def open_run(names: list[str], plan: Plan, run: Run) -> Trackers:
    """One tracker run for ``run`` in ``OUTPUT/<run>``, named ``<output name>/<run label>``; its hyperparameters are
    the run's training settings, its seed, and the rest of the plan (stages, evaluation) as one entry."""
    out = plan.output / run_dir_name(run.label)
    _fresh(names, out)
    rest = {k: v for k, v in plan.fingerprint().items() if k != "methods"}
    config = {"run": run.label, "setting": run.setting, "seed": run.seed, **plan.methods[run.setting], "plan": rest}
    return Trackers.open(names, out, f"{_title(plan)}/{run.label}", config)


def log_stage(tracked: Trackers, stage: StageRecord) -> None:
    """A stage's evaluation at the stage's index; stage 0 is the base model."""
    scores = {task: score.to_json() for task, score in stage.eval.items()}
    tracked.log({**tracker_scalars(scores), "train_seconds": stage.train_seconds}, step=stage.index)


def log_run_end(tracked: Trackers, run_dir: Path, results: Results, label: str) -> None:
    """The run's accuracy matrix (rows: after each stage; columns: every evaluated task's primary metric) as a
    table, and its matrix and training plots (written by ``write_report`` just before) as images."""
    tasks = results.columns
    R = matrix_from_results(results, label, tasks)
    rows = [
        [stage_label(i, results.stage_tasks), *(None if math.isnan(v) else float(v) for v in R[i])]
        for i in range(len(R))
    ]
    step = len(R) - 1
    tracked.log_table("matrix", ["after", *tasks], rows, step)
    for kind in ("matrix", "training"):
        png = run_dir / f"{kind}_{safe_name(label)}.png"
        if png.is_file():
            tracked.log_image(f"plots/{kind}", png, step)


def log_report(names: list[str], plan: Plan, report: Path) -> None:
    """One tracker run for the plan as a whole in ``OUTPUT``: report.md as text and the plots every run shares."""
    _fresh(names, plan.output)
    step = len(plan.stages)
    with Trackers.open(names, plan.output, _title(plan), plan.fingerprint()) as tracked:
        tracked.log_text("report", report.read_text(encoding="utf-8"), step)
        for name in SHARED_PLOTS:
            png = report.parent / f"{name}.png"
            if png.is_file():
                tracked.log_image(f"plots/{name}", png, step)
