"""The PNG plots of a continual run: accuracy by stage, the accuracy matrix, learning vs. retention (Pareto), and
training curves. Drawn from ``results.json`` and ``metrics.jsonl`` only, without pyplot's global state.

    plot_pareto(results, run_dir, run_dir / "pareto.png")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from selfdistill.continual.metrics import (
    aggregate,
    average_accuracy,
    matrix_from_results,
    prior_average,
    summarize_method,
)
from selfdistill.continual.results import (
    RESULTS_FILE,
    Results,
    as_results,
    fmt_num,
    read_metrics_jsonl,
    stage_label,
)
from selfdistill.stats import mean_std

logger = logging.getLogger(__name__)

CURVE_KEYS = ("loss", "kl", "student_entropy")
DPI = 110


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # PNG rendering without any display or global pyplot state
    return figure


def plot_accuracy_by_stage(results: Results, path: Path) -> None:
    """One panel per stage task, per near-prior and prior task, and the averages; x = stage, one line per setting
    (the mean over its finished seeds, with a ±std band, when it has several)."""
    tasks, near, priors = results.stage_tasks, results.near_tasks, results.prior_tasks
    panels = tasks + near + (["near-prior average"] if near else []) + priors + (["prior average"] if priors else [])
    ncols = min(3, len(panels)) or 1
    nrows = max(1, math.ceil(len(panels) / ncols))
    figure = _new_figure(4.2 * ncols, 3.2 * nrows)
    axes = np.atleast_1d(figure.subplots(nrows, ncols, squeeze=False)).ravel()
    agg = aggregate(results)

    def with_averages(M: np.ndarray) -> np.ndarray:
        R, N, P = M[:, : len(tasks)], M[:, len(tasks) : len(tasks) + len(near)], M[:, len(tasks) + len(near) :]
        parts = (
            [R, N]
            + ([prior_average(N)[:, None]] if near else [])
            + [P]
            + ([prior_average(P)[:, None]] if priors else [])
        )
        return np.column_stack(parts)

    columns, bands = {}, {}
    for setting, labels in results.settings_of().items():
        if len(labels) > 1 and agg[setting]["seeds"]:
            runs = [
                matrix_from_results(results, label, [*tasks, *near, *priors])
                for label in agg[setting]["seeds"].values()
            ]
            curves = np.stack([with_averages(M) for M in runs])
            stats = [[mean_std(curves[:, i, j]) for j in range(curves.shape[2])] for i in range(curves.shape[1])]
            columns[setting] = np.array([[c[0] for c in row] for row in stats]).reshape(curves.shape[1:])
            bands[setting] = np.array([[c[1] for c in row] for row in stats]).reshape(curves.shape[1:])
        else:
            columns[setting] = with_averages(matrix_from_results(results, labels[0], [*tasks, *near, *priors]))
    labels = ["base", *tasks]
    for k, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        if k < len(tasks):
            ax.axvspan(k + 0.5, k + 1.5, color="0.9", label="trained at this stage")
        for setting, values in columns.items():
            line = ax.plot(range(values.shape[0]), values[:, k], marker="o", label=setting)[0]
            if bands.get(setting) is not None and np.isfinite(bands[setting][:, k]).any():
                low, high = values[:, k] - bands[setting][:, k], values[:, k] + bands[setting][:, k]
                ax.fill_between(range(values.shape[0]), low, high, color=line.get_color(), alpha=0.15)
        scores = np.concatenate([values[:, k] for values in columns.values()] or [np.zeros(0)])
        if np.all((scores >= 0) & (scores <= 1) | np.isnan(scores)):  # scores in [0, 1]: show the whole range
            ax.set_ylim(-0.03, 1.03)
        kind = " (near-prior)" if panel in near else " (prior)" if panel in priors else ""
        ax.set_title(panel + kind)
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right")
        ax.set_xlim(-0.3, len(labels) - 0.7)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside upper center", ncols=len(names))
    figure.savefig(path, dpi=DPI)


def plot_matrix(results: Results, method: str, path: Path) -> None:
    """Heatmap of R (row = after stage, column = task) with each value written in its cell."""
    tasks = results.stage_tasks
    R = matrix_from_results(results, method, tasks)
    figure = _new_figure(2.0 + 1.5 * max(len(tasks), 1), 1.8 + 0.6 * max(R.shape[0], 1))
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(R):
        ax.text(j, i, fmt_num(value), ha="center", va="center", color="white" if value <= 0.55 else "black")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(R.shape[0]), [stage_label(i, tasks) for i in range(R.shape[0])])
    ax.set_xlabel("task")
    ax.set_title(f"{method}: accuracy matrix R")
    figure.colorbar(image, ax=ax, label="score")
    figure.savefig(path, dpi=DPI)


def _sibling_runs(run_dir: Path, tasks: Sequence[str]) -> list[tuple[str, Results]]:
    """Other run directories next to this one with the same stage tasks, for the Pareto plot."""
    found = []
    for other in sorted(p for p in run_dir.resolve().parent.iterdir() if p.is_dir()):
        if other == run_dir.resolve() or not (other / RESULTS_FILE).is_file():
            continue
        try:
            results = Results.load(other)
        except (OSError, ValueError) as error:
            logger.warning("skipping %s in the Pareto plot: %s", other, error)
            continue
        if results.stage_tasks == list(tasks):
            found.append((other.name, results))
    return found


@dataclass(frozen=True)
class ParetoPoint:
    """One setting in the learning-vs-retention plot."""

    label: str
    """The setting, or ``run/setting`` for a sibling run directory's."""
    prior: float
    """Prior-capability average at the end (mean over the setting's finished seeds)."""
    acc: float
    """ACC at the end (mean over the setting's finished seeds)."""
    prior_std: float
    """Sample std of ``prior`` across seeds (NaN for one seed)."""
    acc_std: float
    """Sample std of ``acc`` across seeds (NaN for one seed)."""
    ours: bool
    """From this run directory (not a sibling)."""


def _setting_points(results: Results) -> list[tuple[str, float, float, float, float]]:
    """``(setting, prior mean, acc mean, prior std, acc std)``; a setting of one run uses it even while partial."""
    points = []
    groups = results.settings_of()
    agg = aggregate(results)
    for setting, labels in groups.items():
        if len(labels) == 1:
            s = summarize_method(results, labels[0])
            values = (s["prior_end"], s["acc"], math.nan, math.nan)
        else:
            scalars = agg[setting]["scalars"]
            values = (scalars["prior_end"][0], scalars["acc"][0], scalars["prior_end"][1], scalars["acc"][1])
        if math.isfinite(values[0]) and math.isfinite(values[1]):
            points.append((setting, *values))
    return points


def pareto_points(results: Results | Mapping[str, Any], run_dir: Path) -> list[ParetoPoint]:
    """One point per setting of this run (mean over seeds, with the std across seeds), then per setting of each
    sibling run with the same stage tasks (labelled ``run/setting``); points missing a coordinate are left out."""
    results = as_results(results)
    points = []
    for run_name, run in [(None, results), *_sibling_runs(Path(run_dir), results.stage_tasks)]:
        for setting, x, y, xerr, yerr in _setting_points(run):
            label = setting if run_name is None else f"{run_name}/{setting}"
            points.append(ParetoPoint(label, x, y, xerr, yerr, run_name is None))
    return points


def plot_pareto(results: Results, run_dir: Path, path: Path) -> None:
    """x = prior-capability average at the end, y = mean stage-task accuracy at the end; one point per setting,
    error bars = std across seeds."""
    figure = _new_figure(6.4, 4.8)
    ax = figure.subplots()
    points = pareto_points(results, run_dir)
    colors: dict[str, str] = {}  # one color per setting name, across runs; the marker tells the runs apart
    for p in points:
        color = colors.setdefault(p.label.rsplit("/", 1)[-1], f"C{len(colors) % 10}")
        style = (
            {"markersize": 9, "zorder": 3, "marker": "o"} if p.ours else {"markersize": 6, "alpha": 0.6, "marker": "s"}
        )
        xerr = p.prior_std if math.isfinite(p.prior_std) else None
        yerr = p.acc_std if math.isfinite(p.acc_std) else None
        ax.errorbar(
            [p.prior], [p.acc], xerr=xerr, yerr=yerr, label=p.label, color=color, capsize=3, linestyle="none", **style
        )
        ax.annotate(p.label, (p.prior, p.acc), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for method in results.runs:  # the common starting point, for reference
        s = summarize_method(results, method)
        if not s["matrix"]:  # a pending run
            continue
        base_acc = average_accuracy(np.asarray(s["matrix"])[:1])
        if math.isfinite(s["prior_base"]) and math.isfinite(base_acc):
            ax.scatter([s["prior_base"]], [base_acc], marker="*", s=160, color="black", label="base model")
            break
    if points:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "nothing to plot: needs prior tasks", ha="center", transform=ax.transAxes)
    ax.set_xlabel("prior-capability average at end (right = kept more)")
    ax.set_ylabel("mean stage-task accuracy at end (up = learned more)")
    seeds = max((len(v["seeds"]) for v in aggregate(results).values()), default=0)
    ax.set_title("learning vs. retention" + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""))
    ax.grid(alpha=0.3)
    figure.savefig(path, dpi=DPI)


def plot_training(results: Results, run_dir: Path, method: str, path: Path) -> bool:
    """Loss and (when logged) KL against the global step across stages; False when there is nothing logged."""
    series: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key in CURVE_KEYS}
    boundaries: list[tuple[float, str]] = []
    offset = 0.0
    for stage in results.runs[method].ordered_stages:
        if not stage.train_dir:
            continue
        rows = read_metrics_jsonl(run_dir / stage.train_dir / "metrics.jsonl")
        boundaries.append((offset, stage.name))
        for xs, ys in series.values():
            if xs:  # a NaN breaks the line, so no segment joins the end of one stage to the start of the next
                xs.append(math.nan)
                ys.append(math.nan)
        steps = [float(r["step"]) if isinstance(r.get("step"), int | float) else n + 1.0 for n, r in enumerate(rows)]
        for row, step in zip(rows, steps, strict=True):
            for key, (xs, ys) in series.items():
                if isinstance(row.get(key), int | float):
                    xs.append(offset + step)
                    ys.append(float(row[key]))
        offset += max(steps, default=0.0)
    keys = [key for key in CURVE_KEYS if series[key][0]]
    labels = {key: key for key in keys}
    if "kl" in keys and series["kl"] == series["loss"]:  # forward KL on the full vocabulary: the loss is the KL
        keys.remove("kl")
        labels["loss"] = "loss (= KL)"
    if not keys:
        return False
    figure = _new_figure(7.0, 2.6 * len(keys))
    for ax, key in zip(
        np.atleast_1d(figure.subplots(len(keys), 1, sharex=True, squeeze=False)).ravel(), keys, strict=True
    ):
        ax.plot(*series[key], marker=".", label=labels[key])
        for start, name in boundaries:
            ax.axvline(start + 0.5, color="0.5", linestyle="--", linewidth=1)
            ax.annotate(
                name,
                (start + 0.5, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8,
                color="0.3",
            )
        ax.set_ylabel(labels[key])
        ax.grid(alpha=0.3)
    ax.set_xlabel("optimizer step (all stages)")
    figure.suptitle(f"{method}: training curves (dashed = stage start)")
    figure.savefig(path, dpi=DPI)
    return True
