"""Turn a continual run directory into ``report.md`` and PNG plots, from ``results.json`` and ``metrics.jsonl`` only.

    write_report(Path("runs/demo"))      # → runs/demo/report.md, accuracy_by_stage.png, pareto.png, ...

The run directory holds ``results.json`` (written by the continual runner after every stage)::

    {"version": 1, "model": "smollm2-135m-instruct",
     "stage_tasks": ["skill_a", "skill_b"],       # trained in this order; the columns of the matrix R
     "prior_tasks": ["prior_probe", "arc_easy"],  # what the model could do before; measured after every stage
     "methods": {
       "sft": {"config": {"method": "sft", "lr": 1e-05, ...},
               "stages": [                        # stage 0 is the base model; a run in progress has fewer
         {"index": 0, "name": "base", "train_task": null, "train_dir": null, "train_seconds": 0.0,
          "eval": {"skill_a": {"metrics": {"acc": 0.1}, "stderr": {"acc": 0.02}, "n": 50, "primary": "acc"},
                   ...one entry per stage task and per prior task...}},
         {"index": 1, "name": "skill_a", "train_task": "skill_a", "train_dir": "sft/stage1-skill_a",
          "train_seconds": 120.0, "eval": {...}},
         ...]},
       "sdft": {...same shape...}}}

``train_dir`` is relative to the run directory and holds ``metrics.jsonl``: one JSON object per optimizer step
with ``step``, ``loss``, ``lr``, ``seconds_per_step`` and, for SDFT, ``kl``, ``teacher_minus_student_logprob``,
``student_entropy``, ``completion_length``. Missing keys, files and stages are skipped, so a partial run reports
what it has. The Pareto plot also shows every sibling run directory (same parent) with the same ``stage_tasks``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from selfdistill.fileio import write_text_atomic
from selfdistill.metrics import average_accuracy, matrix_from_results, prior_average, summarize_method

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CURVE_KEYS = ("loss", "kl", "student_entropy")
DPI = 110


# ---------------------------------------------------------------- reading


class ResultsError(ValueError):
    """A ``results.json`` that cannot be read or has the wrong shape; the message names the file."""

def load_results(run_dir: Path) -> dict[str, Any]:
    """Read and shape-check ``run_dir/results.json``; errors are one line naming the file."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {run_dir} a continual run directory?)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(results, dict):
        raise ResultsError(f"{path}: expected a JSON object at the top level")
    for key, kind in (("stage_tasks", list), ("prior_tasks", list), ("methods", dict)):
        if not isinstance(results.setdefault(key, kind()), kind):
            raise ResultsError(f"{path}: field '{key}' must be a {'list' if kind is list else 'object'}")
    for name, method in results["methods"].items():
        stages = method.get("stages") if isinstance(method, dict) else None
        if not isinstance(stages, list) or not all(isinstance(s, dict) and isinstance(s.get("index"), int) for s in stages):
            raise ResultsError(f"{path}: methods.{name}.stages must be a list of objects with an integer 'index'")
    return results


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; a missing file is empty and a torn line (a run still writing) is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return [row for row in rows if isinstance(row, dict)]


def _stages(results: Mapping[str, Any], method: str) -> list[dict[str, Any]]:
    return sorted(results["methods"][method]["stages"], key=lambda stage: int(stage["index"]))


def _stage_label(index: int, tasks: Sequence[str]) -> str:
    name = tasks[index - 1] if 0 < index <= len(tasks) else f"stage {index}"
    return "base" if index == 0 else f"after {name}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


# ---------------------------------------------------------------- markdown


def _num(value: float, signed: bool = False) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.3f}" if signed else f"{value:.3f}"


def _cell(value: float, stderr: float) -> str:
    text = _num(value)
    return f"{text} ± {stderr:.3f}" if math.isfinite(value) and math.isfinite(stderr) else text


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _seed_table(results: Mapping[str, Any], method: str) -> list[str]:
    """Rows = stages, columns = each stage task, the prior average, then each prior task (± stderr)."""
    tasks, priors = list(results["stage_tasks"]), list(results["prior_tasks"])
    R, R_err = (matrix_from_results(results, method, tasks, field) for field in ("metrics", "stderr"))
    P, P_err = (matrix_from_results(results, method, priors, field) for field in ("metrics", "stderr"))
    prior_avg = prior_average(P)
    rows = []
    for i in range(R.shape[0]):
        cells = [_cell(R[i, j], R_err[i, j]) for j in range(len(tasks))]
        if priors:
            cells += [_num(prior_avg[i])] + [_cell(P[i, m], P_err[i, m]) for m in range(len(priors))]
        rows.append([_stage_label(i, tasks), *cells])
    header = ["stage", *tasks] + (["prior avg", *priors] if priors else [])
    return _table(header, rows)


def _metrics_table(results: Mapping[str, Any], summaries: Mapping[str, dict[str, Any]]) -> list[str]:
    tasks = list(results["stage_tasks"])
    header = ["method", "stages", "ACC", "BWT", "FWT", *(f"forgetting {t}" for t in tasks)]
    header += ["prior base", "prior end", "prior drop", "train time"]
    rows = []
    for method, s in summaries.items():
        seconds = sum(float(stage.get("train_seconds") or 0.0) for stage in _stages(results, method))
        rows.append(
            [method, f"{s['stages_done']}/{len(tasks)}", _num(s["acc"]), _num(s["bwt"], True), _num(s["fwt"], True)]
            + [_num(s["forgetting"][t]) for t in tasks]
            + [_num(s["prior_base"]), _num(s["prior_end"]), _num(s["prior_drop"], True), _duration(seconds)]
        )
    return _table(header, rows)


def _summary_line(method: str, s: Mapping[str, Any], tasks: Sequence[str]) -> str:
    """One sentence per method, every claim computed from the numbers: gains, forgetting, prior change."""
    R = np.asarray(s["matrix"], dtype=float)
    learned = [
        f"{t} {s['gain'][t]:+.3f} ({R[j, j]:.3f}→{R[j + 1, j]:.3f})"
        for j, t in enumerate(tasks)
        if math.isfinite(s["gain"][t])
    ]
    end = R[-1] if R.shape[0] else []
    lost = [
        f"{t} {s['forgetting'][t]:.3f} from its peak ({end[j] + s['forgetting'][t]:.3f}→{end[j]:.3f})"
        for j, t in enumerate(tasks)
        if s["forgetting"][t] > 0.0005  # NaN compares False; below this it would print as 0.000
    ]
    prior = f"({s['prior_base']:.3f}→{s['prior_end']:.3f})"
    if s["prior_drop"] > 0.0005:
        lost.append(f"prior average {s['prior_drop']:.3f} {prior}")
    parts = [f"learned {', '.join(learned)}" if learned else "learned nothing yet (no training stage finished)"]
    parts.append(f"lost {', '.join(lost)}" if lost else "lost nothing measured")
    if s["prior_drop"] <= 0.0005:
        parts.append(f"kept prior average {prior}")
    return f"- **{method}** ({s['stages_done']}/{len(tasks)} stages): " + "; ".join(parts) + "."


def _config_line(config: Mapping[str, Any]) -> str:
    scalars = [f"{key}={value}" for key, value in config.items() if isinstance(value, str | int | float | bool)]
    return f"config: `{' · '.join(scalars)}`" if scalars else ""


# ---------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # PNG rendering without any display or global pyplot state
    return figure


def _plot_accuracy_by_stage(results: Mapping[str, Any], path: Path) -> None:
    """One panel per stage task, per prior task, and the prior average; x = stage, one line per method."""
    tasks, priors = list(results["stage_tasks"]), list(results["prior_tasks"])
    panels = tasks + priors + (["prior average"] if priors else [])
    ncols = min(3, len(panels)) or 1
    nrows = max(1, math.ceil(len(panels) / ncols))
    figure = _new_figure(4.2 * ncols, 3.2 * nrows)
    axes = np.atleast_1d(figure.subplots(nrows, ncols, squeeze=False)).ravel()
    columns = {}
    for method in results["methods"]:
        P = matrix_from_results(results, method, priors)
        columns[method] = np.column_stack([matrix_from_results(results, method, tasks), P, prior_average(P)])
    labels = ["base", *tasks]
    for k, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        if k < len(tasks):
            ax.axvspan(k + 0.5, k + 1.5, color="0.9", label="trained at this stage")
        for method, values in columns.items():
            ax.plot(range(values.shape[0]), values[:, k], marker="o", label=method)
        scores = np.concatenate([values[:, k] for values in columns.values()] or [np.zeros(0)])
        if np.all((scores >= 0) & (scores <= 1) | np.isnan(scores)):  # scores in [0, 1]: show the whole range
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(panel + (" (prior)" if k >= len(tasks) and panel != "prior average" else ""))
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right")
        ax.set_xlim(-0.3, len(labels) - 0.7)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside upper center", ncols=len(names))
    figure.savefig(path, dpi=DPI)


def _plot_matrix(results: Mapping[str, Any], method: str, path: Path) -> None:
    """Heatmap of R (row = after stage, column = task) with each value written in its cell."""
    tasks = list(results["stage_tasks"])
    R = matrix_from_results(results, method, tasks)
    figure = _new_figure(2.0 + 1.5 * max(len(tasks), 1), 1.8 + 0.6 * max(R.shape[0], 1))
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(R):
        ax.text(j, i, _num(value), ha="center", va="center", color="white" if value <= 0.55 else "black")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(R.shape[0]), [_stage_label(i, tasks) for i in range(R.shape[0])])
    ax.set_xlabel("task")
    ax.set_title(f"{method}: accuracy matrix R")
    figure.colorbar(image, ax=ax, label="score")
    figure.savefig(path, dpi=DPI)


def _sibling_runs(run_dir: Path, tasks: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Other run directories next to this one with the same stage tasks, for the Pareto plot."""
    found = []
    for other in sorted(p for p in run_dir.resolve().parent.iterdir() if p.is_dir()):
        if other == run_dir.resolve() or not (other / RESULTS_FILE).is_file():
            continue
        try:
            results = load_results(other)
        except (OSError, ValueError) as error:
            logger.warning("skipping %s in the Pareto plot: %s", other, error)
            continue
        if list(results["stage_tasks"]) == list(tasks):
            found.append((other.name, results))
    return found


def pareto_points(results: Mapping[str, Any], run_dir: Path) -> list[tuple[str, float, float, bool]]:
    """``(label, prior average at end, ACC at end, from this run)`` per method of this run, then per method of each
    sibling run with the same stage tasks (labelled ``run/method``); points missing a coordinate are left out."""
    points = []
    for run_name, run in [(None, results), *_sibling_runs(Path(run_dir), results["stage_tasks"])]:
        for method in run["methods"]:
            s = summarize_method(run, method)
            if math.isfinite(s["prior_end"]) and math.isfinite(s["acc"]):
                label = method if run_name is None else f"{run_name}/{method}"
                points.append((label, s["prior_end"], s["acc"], run_name is None))
    return points


def _plot_pareto(results: Mapping[str, Any], run_dir: Path, path: Path) -> None:
    """x = prior-capability average at the end, y = mean stage-task accuracy at the end; one point per method."""
    figure = _new_figure(6.4, 4.8)
    ax = figure.subplots()
    points = pareto_points(results, run_dir)
    colors: dict[str, str] = {}  # one color per method name, across runs; the marker tells the runs apart
    for label, x, y, ours in points:
        color = colors.setdefault(label.rsplit("/", 1)[-1], f"C{len(colors) % 10}")
        style = {"s": 80, "zorder": 3} if ours else {"s": 40, "alpha": 0.6, "marker": "s"}
        ax.scatter([x], [y], label=label, color=color, **style)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for method in results["methods"]:  # the common starting point, for reference
        s = summarize_method(results, method)
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
    ax.set_title("learning vs. retention")
    ax.grid(alpha=0.3)
    figure.savefig(path, dpi=DPI)


def _plot_training(results: Mapping[str, Any], run_dir: Path, method: str, path: Path) -> bool:
    """Loss and (when logged) KL against the global step across stages; False when there is nothing logged."""
    series: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key in CURVE_KEYS}
    boundaries: list[tuple[float, str]] = []
    offset = 0.0
    for stage in _stages(results, method):
        if not stage.get("train_dir"):
            continue
        rows = read_metrics_jsonl(run_dir / stage["train_dir"] / "metrics.jsonl")
        boundaries.append((offset, str(stage.get("name", stage["index"]))))
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
    for ax, key in zip(np.atleast_1d(figure.subplots(len(keys), 1, sharex=True, squeeze=False)).ravel(), keys,
                       strict=True):
        ax.plot(*series[key], marker=".", label=labels[key])
        for start, name in boundaries:
            ax.axvline(start + 0.5, color="0.5", linestyle="--", linewidth=1)
            ax.annotate(name, (start + 0.5, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="0.3")
        ax.set_ylabel(labels[key])
        ax.grid(alpha=0.3)
    ax.set_xlabel("optimizer step (all stages)")
    figure.suptitle(f"{method}: training curves (dashed = stage start)")
    figure.savefig(path, dpi=DPI)
    return True


# ---------------------------------------------------------------- entry points


def write_report(run_dir: Path) -> Path:
    """Write ``report.md`` and the PNG plots into ``run_dir``; return the path of ``report.md``."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    tasks, methods = list(results["stage_tasks"]), list(results["methods"])
    summaries = {method: summarize_method(results, method) for method in methods}
    _plot_accuracy_by_stage(results, run_dir / "accuracy_by_stage.png")
    _plot_pareto(results, run_dir, run_dir / "pareto.png")

    lines = [f"# Continual run `{run_dir.resolve().name}`", ""]
    lines += [f"model: `{results.get('model', '?')}` · stages: {' → '.join(tasks) or '—'} · prior tasks: "
              f"{', '.join(results['prior_tasks']) or '—'} · methods: {', '.join(methods) or '—'}", ""]
    lines += ["## What was learned, what was lost", ""]
    lines += [_summary_line(method, summaries[method], tasks) for method in methods] + [""]
    lines += ["## Metrics", "", *_metrics_table(results, summaries), ""]
    lines += ["ACC: mean final score over the stage tasks. BWT: mean change of each earlier task from just after its "
              "stage to the end (negative = forgetting). FWT: mean score of a task just before its stage minus at "
              "base. Forgetting: best score after the task's stage minus final. Prior drop: prior average at base "
              "minus at the end (positive = lost). Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018.", ""]
    lines += ["![accuracy by stage](accuracy_by_stage.png)", "", "![pareto](pareto.png)", ""]
    for method in methods:
        config = _config_line(results["methods"][method].get("config") or {})
        lines += [f"## {method}", ""] + ([config, ""] if config else [])
        lines += ["Score of each task (rows: after each stage; primary metric ± stderr).", ""]
        lines += [*_seed_table(results, method), ""]
        if summaries[method]["matrix"]:
            _plot_matrix(results, method, run_dir / f"matrix_{_safe(method)}.png")
            lines += [f"![{method} accuracy matrix](matrix_{_safe(method)}.png)", ""]
        if _plot_training(results, run_dir, method, run_dir / f"training_{_safe(method)}.png"):
            lines += [f"![{method} training curves](training_{_safe(method)}.png)", ""]

    report = run_dir / REPORT_FILE
    write_text_atomic(report, "\n".join(lines))  # a reader never sees half a report while a run rewrites it
    logger.info("wrote %s", report)
    return report


@dataclass
class ReportConfig:
    """Write report.md and PNG plots for a continual run directory (from results.json and metrics.jsonl)."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory: the output of `selfdistill continual` (holds results.json)."""


def run_report_cli(cfg: ReportConfig) -> Path:
    return run_report(cfg.run_dir)


def run_report(run_dir: Path | str) -> Path:
    """``selfdistill report DIR``: check DIR, then ``write_report``. Raises FileNotFoundError or ResultsError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    return write_report(run_dir)
