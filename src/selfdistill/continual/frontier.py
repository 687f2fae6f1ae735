"""The learning–forgetting frontier: what each run learned against what it kept, point by point, and the table of
the best each method did within the forgetting budget.

    plot_frontier(runs, budget=0.05, path=run_dir / "frontier.png")
    lines = best_within_budget_table(runs, budget=0.05)          # markdown, one row per setting

A :class:`FrontierRun` is one training run's evaluation points (``budget.EvalPoint``) with its guards' references.
On the chart x is *guard retained* = 1 − the mean clipped guard drop (the quantity the budget's first clause bounds,
so the budget is the vertical line x = 1 − D), y is the selection score; each run is a path from step 0, each point
labelled by its step, filled where the whole rule holds and hollow where it does not (a point right of the line can
still break the per-guard clause), the kept point a star. Every setting of a plan shares one chart, one colour per
setting. Drawn without pyplot's global state; matplotlib is imported inside the function, so importing this module
(for the table) costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdistill.continual.budget import EvalPoint, GuardBase, assess, choose
from selfdistill.continual.metrics import mean_std, paired_difference
from selfdistill.markdown import table


@dataclass(frozen=True)
class FrontierRun:
    """One run's path along training."""

    label: str
    """Run label (``sdft@seed1``)."""
    setting: str
    """The setting it belongs to (``sdft``): runs of one setting differ only by seed."""
    seed: int
    """Pairs runs of different settings in the table's intervals."""
    points: tuple[EvalPoint, ...]
    """Evaluation points, step 0 included."""
    base: Mapping[str, GuardBase]
    """The guards' references (``budget.baseline``)."""
    test: EvalPoint | None = None
    """The kept model scored on the test items (selection task's test split, guards' test items), when done."""
    test_base: Mapping[str, GuardBase] | None = None
    """The guards' references on their test items (the start model's test scores)."""


def guard_retained(point: EvalPoint, base: Mapping[str, GuardBase]) -> float:
    """1 − the mean over guards of max(drop, 0): 1.0 = nothing lost."""
    return 1.0 - assess(point, base, 0.0).mean_drop


def kept_point(run: FrontierRun, budget: float) -> EvalPoint:
    """The point the budget keeps for ``run`` (``budget.choose``)."""
    return choose(run.points, run.base, budget)


# -------------------------------------------------------------------------------------------------------- the chart
def plot_frontier(runs: Sequence[FrontierRun], budget: float, path: Path, title: str = "") -> None:
    """Selection score against guard retained for every run, steps labelled, the budget as a line; a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 5.0), layout="constrained")
    FigureCanvasAgg(figure)  # PNG rendering without a display or pyplot's global state
    draw_frontier(figure.subplots(), runs, budget, title)
    figure.savefig(path, dpi=110)


def draw_frontier(ax: Any, runs: Sequence[FrontierRun], budget: float, title: str = "") -> None:
    """``plot_frontier``'s chart on a given matplotlib axes (one panel of a figure with several)."""
    from matplotlib.lines import Line2D

    colors: dict[str, str] = {}
    for run in runs:
        color = colors.setdefault(run.setting, f"C{len(colors) % 10}")
        points = sorted(run.points, key=lambda p: p.step)
        xs, ys = [guard_retained(p, run.base) for p in points], [p.selection for p in points]
        ax.plot(xs, ys, color=color, alpha=0.5, linewidth=1)
        kept = kept_point(run, budget)
        for point, x, y in zip(points, xs, ys, strict=True):
            within = point.step == 0 or assess(point, run.base, budget).within
            ax.scatter([x], [y], s=28, color=color if within else "white", edgecolors=color, zorder=3)
            ax.annotate(str(point.step), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color=color)
        ax.scatter([guard_retained(kept, run.base)], [kept.selection], marker="*", s=180, color=color, zorder=4)
    ax.axvline(1.0 - budget, color="black", linestyle="--", linewidth=1)
    handles = [Line2D([], [], color=c, marker="o", label=s) for s, c in colors.items()]
    handles += [
        Line2D([], [], color="black", linestyle="--", label=f"budget D = {budget:g} (keep right of it)"),
        Line2D([], [], color="gray", marker="*", linestyle="none", markersize=12, label="kept"),
        Line2D([], [], color="gray", marker="o", linestyle="none", markerfacecolor="white", label="over budget"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="best")
    if not runs:
        ax.text(0.5, 0.5, "no evaluation points yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("guard retained = 1 − mean guard drop (right = lost less)")
    ax.set_ylabel("selection score of the task learned (up = learned more)")
    ax.set_title(title or "learning–forgetting frontier (numbers: optimizer steps)")
    ax.grid(alpha=0.3)


# -------------------------------------------------------------------------------------------------------- the table
def best_within_budget(runs: Sequence[FrontierRun], budget: float) -> dict[str, dict[str, dict]]:
    """Per setting, per seed, what the budget kept: ``{setting: {"kept": {seed: step}, name: {seed: value}}}`` for
    the names ``selection``, ``mean_drop``, ``worst_drop`` and, where the kept model was tested, ``test_selection``
    and ``test_mean_drop``."""
    out: dict[str, dict[str, dict]] = {}
    for run in runs:
        entry = out.setdefault(run.setting, {})
        kept = kept_point(run, budget)
        verdict = assess(kept, run.base, budget)
        values = {"kept": kept.step, "selection": kept.selection, "mean_drop": verdict.mean_drop}
        values["worst_drop"] = max(verdict.drops.values())
        if run.test is not None and run.test_base:
            values["test_selection"] = run.test.selection
            values["test_mean_drop"] = assess(run.test, run.test_base, budget).mean_drop
        for name, value in values.items():
            entry.setdefault(name, {})[run.seed] = value
    return out


def _pm(values: Mapping[int, float]) -> str:
    mean, std, n = mean_std(list(values.values()))
    if not n:
        return "—"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "")


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> str:
    d = paired_difference(a, b)
    if not math.isfinite(d["mean"]):
        return "—"
    if not math.isfinite(d["lo"]):
        return f"{d['mean']:+.3f} (n={d['n']})"
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def best_within_budget_table(runs: Sequence[FrontierRun], budget: float) -> list[str]:
    """Markdown lines: per setting the kept steps, selection score and guard drops (mean ± std over seeds), test-side
    numbers where measured, and the selection score's paired difference to the first setting with its 95% interval
    (``metrics.paired_difference``, paired by seed)."""
    rows = best_within_budget(runs, budget)
    tested = any("test_selection" in entry for entry in rows.values())
    header = ["setting", "seeds", "kept steps", "selection", "guard drop (mean)", "worst guard drop"]
    header += ["test selection", "test guard drop"] if tested else []
    reference = next(iter(rows), None)
    header += [f"Δ selection vs {reference} [95% CI]"] if len(rows) > 1 else []
    body = []
    for setting, entry in rows.items():
        kept = ", ".join(str(entry["kept"][seed]) for seed in sorted(entry["kept"]))
        cells = [setting, str(len(entry["kept"])), kept, _pm(entry["selection"]), _pm(entry["mean_drop"])]
        cells += [_pm(entry["worst_drop"])]
        if tested:
            cells += [_pm(entry.get("test_selection", {})), _pm(entry.get("test_mean_drop", {}))]
        if len(rows) > 1:
            same = setting == reference
            cells += ["—" if same else _paired(entry["selection"], rows[reference]["selection"])]
        body.append(cells)
    title = f"Best within a forgetting budget of {budget:g} (guard drop = reference minus now):"
    return [title, "", *table(header, body)]
