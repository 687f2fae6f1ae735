"""The report's forgetting-budget section: for a plan whose stages evaluated during training, what each stage kept,
the best each setting did within the budget, the guards' sizes, and ``frontier.png``.

    lines = budget_section(results, run_dir)       # [] for a plan that did not evaluate during training

Drawn from ``results.json`` only (each stage record's ``training_evals``, ``guards``, ``kept_step``, ``budget``), so
a partial run reports the stages it finished.
"""

from __future__ import annotations

import math
from pathlib import Path

from selfdistill.continual.budget import EvalPoint, GuardBase, within_budget
from selfdistill.continual.frontier import FrontierRun, best_within_budget_table, draw_frontier
from selfdistill.continual.metrics import aggregate, matrix_from_results
from selfdistill.continual.results import Results, StageRecord, TrainingEval
from selfdistill.markdown import table

FRONTIER_FILE = "frontier.png"


def _point(point: TrainingEval) -> EvalPoint:
    return EvalPoint(point.step, float(point.selection), point.guards)


def frontier_run(label: str, setting: str, seed: int, stage: StageRecord) -> FrontierRun | None:
    """One run's path through one stage (None where the stage has no points or no guard references)."""
    points = tuple(_point(p) for p in stage.training_evals if p.selection is not None)
    base = {n: GuardBase(g.base, g.resolution) for n, g in stage.guards.items() if g.base is not None}
    if not points or not base or points[0].step != 0:
        return None
    test = _point(stage.kept_test) if stage.kept_test and stage.kept_test.selection is not None else None
    test_base = {n: GuardBase(g.test_base, g.resolution) for n, g in stage.guards.items() if g.test_base is not None}
    return FrontierRun(label, setting, seed, points, base, test, test_base or None)


def stage_runs(results: Results, index: int) -> tuple[list[FrontierRun], float | None]:
    """Every run's path through stage ``index``, and the budget they were held to (None: evaluated without one)."""
    runs, budgets = [], set()
    for position, (label, record) in enumerate(results.runs.items()):
        stage = record.stage(index)
        run = (
            frontier_run(label, record.setting, position if record.seed is None else record.seed, stage)
            if stage
            else None
        )
        if run is not None:
            runs.append(run)
            budgets.add(stage.budget)
    budgets.discard(None)
    return runs, (min(budgets) if budgets else None)


def _guard_lines(results: Results, index: int) -> list[str]:
    """Each guard of stage ``index``: why it guards, its items, what one item is worth, and its reference."""
    stage = next((r.stage(index) for r in results.runs.values() if r.stage(index) and r.stage(index).guards), None)
    if stage is None:
        return []
    rows = []
    for name, guard in stage.guards.items():
        item = f"{guard.resolution:.3f}" if guard.resolution else "continuous"
        reference = "—" if guard.base is None else f"{guard.base:.3f}"
        rows.append([name, guard.origin, str(guard.n or "—"), item, reference])
    note = (
        "Guards of this stage (as in the first run that has it; references differ by run). One item is 1/n: a "
        "guard cannot show a drop finer than that, and the budget lets any guard lose one item."
    )
    return [note, "", *table(["guard", "origin", "selection items", "one item", "reference"], rows)]


def kept_tables(results: Results) -> list[str]:
    """Per setting, each task's score after each stage with the step each stage kept: the seed's
    "Task A: 90% → 88% → 86%", on the quoted test items (mean ± std over finished seeds)."""
    agg, columns, lines = aggregate(results), results.columns, []
    for setting, labels in results.settings_of().items():
        entry = agg[setting]
        if len(labels) > 1 and entry["seeds"]:
            mean, std = entry["matrix_mean"], entry["matrix_std"]
        else:
            label = max(labels, key=lambda name: len(results.runs[name].stages))
            mean = matrix_from_results(results, label, columns)
            std = mean * math.nan
        rows = []
        for i in range(mean.shape[0]):
            kept = [results.runs[label].stage(i) for label in labels]
            steps = ", ".join(str(s.kept_step) for s in kept if s is not None and s.kept_step is not None)
            cells = [
                f"{m:.2f}" + (f" ± {d:.2f}" if math.isfinite(d) else "") if math.isfinite(m) else "—"
                for m, d in zip(mean[i], std[i], strict=True)
            ]
            rows.append(["base" if i == 0 else f"after {results.stage_tasks[i - 1]}", steps or "—", *cells])
        lines += [f"**{setting}** ({len(labels)} run{'s' if len(labels) > 1 else ''}):", ""]
        lines += [*table(["stage", "kept step", *columns], rows), ""]
    return lines


def plot_plan_frontier(panels: list[tuple[str, list[FrontierRun], float]], path: Path) -> None:
    """One frontier panel per stage (every setting of the plan on each), side by side, into one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4 * len(panels), 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, runs, budget) in zip(axes, panels, strict=True):
        draw_frontier(ax, runs, budget, title)
    figure.savefig(path, dpi=100)


def budget_section(results: Results, run_dir: Path) -> list[str]:
    """The report's lines on the forgetting budget, and ``frontier.png``; [] when no stage evaluated in training."""
    lines, panels = [], []
    for index, task in enumerate(results.stage_tasks, start=1):
        runs, budget = stage_runs(results, index)
        if not runs:
            continue
        lines += [f"### Stage {index}: {task}", ""]
        if budget is None:
            lines += ["Evaluated during training without a forgetting budget: each run kept its last step.", ""]
        else:
            lines += [*best_within_budget_table(runs, budget), ""]
        lines += [*_guard_lines(results, index), ""]
        panels.append((f"stage {index}: {task}", runs, 1.0 if budget is None else budget))
    if not panels:
        return []
    plot_plan_frontier(panels, run_dir / FRONTIER_FILE)
    intro = [
        "## Within the forgetting budget",
        "",
        "Each stage was evaluated every few steps on its task's selection split and on its guards (what must not be "
        "lost: the prior suite's quick subset, the skill's near-prior tasks, every earlier stage's task, --keep "
        "tasks). The budget is cumulative from the plan's start model; an earlier skill is held to its score when "
        "its own stage ended. Each stage kept the best selection score within the budget and handed it on. "
        "Selection and guard-selection items are never among the test items quoted in the tables above.",
        "",
        "What each stage kept, on the quoted test items:",
        "",
        *kept_tables(results),
        f"![learning–forgetting frontier]({FRONTIER_FILE})",
        "",
    ]
    return intro + lines


def last_points(results: Results, index: int) -> list[str]:
    """Per run, stage ``index``'s last evaluated point beside the kept one: what training reached and why the budget
    kept what it kept (a table of zeros says little without it)."""
    lines = []
    for label, record in results.runs.items():
        stage = record.stage(index)
        if stage is None or not stage.training_evals or stage.kept_step is None:
            continue
        last = max(stage.training_evals, key=lambda p: p.step)
        run = frontier_run(label, record.setting, record.seed or 0, stage)
        verdict = ""
        if run is not None and stage.budget is not None:
            verdict = " (within budget)" if within_budget(_point(last), run.base, stage.budget) else " (over budget)"
        guards = ", ".join(f"{name} {value:.2f}" for name, value in last.guards.items())
        selection = "—" if last.selection is None else f"{last.selection:.2f}"
        lines.append(
            f"  {label}: step {last.step} scored {selection}, guards {guards}{verdict}; kept step {stage.kept_step}"
        )
    return lines


def budget_summary(results: Results, run_dir: Path) -> list[str]:
    """What a terminal shows after a budgeted plan: per stage the best-within-budget table, where each run's training
    ended, and the chart's path."""
    lines = []
    for index, task in enumerate(results.stage_tasks, start=1):
        runs, budget = stage_runs(results, index)
        if runs and budget is not None:
            lines += [f"Stage {index} ({task}). " + best_within_budget_table(runs, budget)[0], ""]
            lines += [*best_within_budget_table(runs, budget)[2:], ""]
            lines += [
                "Where training ended (the last point, on the selection items):",
                *last_points(results, index),
                "",
            ]
    frontier = run_dir / FRONTIER_FILE
    return lines + ([f"frontier (selection score against guard retained, per stage): {frontier}"] if lines else [])
