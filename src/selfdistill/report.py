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
from selfdistill.metrics import (
    aggregate,
    average_accuracy,
    comparisons,
    matrix_from_results,
    mean_std,
    prior_average,
    settings_of,
    summarize_method,
)

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
    """Rows = stages, columns = each stage task, then the near-prior average and tasks, then the prior average and
    tasks (± stderr)."""
    tasks = list(results["stage_tasks"])
    R, R_err = (matrix_from_results(results, method, tasks, field) for field in ("metrics", "stderr"))
    groups = [(label, list(results.get(key, []))) for label, key in (("near avg", "near_tasks"), ("prior avg", "prior_tasks"))]
    parts = [(label, names, *(matrix_from_results(results, method, names, f) for f in ("metrics", "stderr")))
             for label, names in groups if names]  # fmt: skip
    rows = []
    for i in range(R.shape[0]):
        cells = [_cell(R[i, j], R_err[i, j]) for j in range(len(tasks))]
        for _, names, P, P_err in parts:
            cells += [_num(prior_average(P)[i])] + [_cell(P[i, m], P_err[i, m]) for m in range(len(names))]
        rows.append([_stage_label(i, tasks), *cells])
    header = ["stage", *tasks] + [c for label, names, *_ in parts for c in (label, *names)]
    return _table(header, rows)


def _metrics_table(results: Mapping[str, Any], summaries: Mapping[str, dict[str, Any]]) -> list[str]:
    tasks = list(results["stage_tasks"])
    near = bool(results.get("near_tasks"))
    header = ["run", "stages", "ACC", "BWT", "FWT", *(f"forgetting {t}" for t in tasks)]
    header += ["prior base", "prior end", "prior drop"] + (["near base", "near end", "near drop"] if near else [])
    header += ["train time"]
    rows = []
    for method, s in summaries.items():
        seconds = sum(float(stage.get("train_seconds") or 0.0) for stage in _stages(results, method))
        rows.append(
            [method, f"{s['stages_done']}/{len(tasks)}", _num(s["acc"]), _num(s["bwt"], True), _num(s["fwt"], True)]
            + [_num(s["forgetting"][t]) for t in tasks]
            + [_num(s["prior_base"]), _num(s["prior_end"]), _num(s["prior_drop"], True)]
            + ([_num(s["near_base"]), _num(s["near_end"]), _num(s["near_drop"], True)] if near else [])
            + [_duration(seconds)]
        )
    return _table(header, rows)


def _pm(value: tuple[float, float, int] | Sequence[float], signed: bool = False) -> str:
    mean, std = float(value[0]), float(value[1])
    return _num(mean, signed) + (f" ± {std:.3f}" if math.isfinite(mean) and math.isfinite(std) else "")


def _interval(d: Mapping[str, float]) -> str:
    if not math.isfinite(d["mean"]):
        return "—"
    if not math.isfinite(d["lo"]):
        return f"{d['mean']:+.3f} (n={d['n']})"
    # the interval excludes 0; not claimed from fewer than 3 pairs or pairs that all differ by the same amount
    mark = " *" if d["n"] >= 3 and d["hi"] > d["lo"] and (d["lo"] > 0 or d["hi"] < 0) else ""
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]{mark}"


def is_multi(results: Mapping[str, Any]) -> bool:
    """Whether the run has settings with several seeds or sweeps: then the report aggregates across runs."""
    groups = settings_of(results)
    return any(len(labels) > 1 for labels in groups.values()) or any(g not in results["methods"] for g in groups)


def _across_seeds(results: Mapping[str, Any]) -> list[str]:
    """Mean ± std per setting over its finished seeds, paired differences with 95% intervals, and per-cell tables."""
    agg = aggregate(results)
    near = bool(results.get("near_tasks"))
    n_seeds = sorted({len(v["runs"]) for v in agg.values()})
    lines = ["## Across seeds", "",
             f"Each setting runs once per seed ({'/'.join(map(str, n_seeds))} seeds); a run counts here once all its "
             "stages are done. Mean ± sample std over those runs.", ""]  # fmt: skip
    header = ["setting", "seeds done", "ACC", "BWT", "prior end", "prior drop"] + (["near end", "near drop"] if near else [])
    rows = []
    for setting, v in agg.items():
        sc = v["scalars"]
        rows.append([setting, f"{len(v['seeds'])}/{len(v['runs'])}", _pm(sc["acc"]), _pm(sc["bwt"], True),
                     _pm(sc["prior_end"]), _pm(sc["prior_drop"], True)]
                    + ([_pm(sc["near_end"]), _pm(sc["near_drop"], True)] if near else []))  # fmt: skip
    lines += [*_table(header, rows), ""]
    pairs = comparisons(results, agg)
    if pairs:
        lines += ["### Paired differences", "",
                  "Setting minus reference, paired by seed, mean [95% t-interval over seeds]; * marks an interval that "
                  "excludes 0 (from 3 or more seeds). The interval is about training and sampling noise on these "
                  "evaluation items; it does not cover which items were drawn, and comparisons are not corrected for "
                  "their number. Higher ACC/BWT is better; a lower (more negative) prior or near drop is better.",
                  ""]  # fmt: skip
        header = ["setting − reference", "ACC", "BWT", "prior drop"] + (["near drop"] if near else [])
        rows = [[f"{p['setting']} − {p['reference']}", _interval(p["acc"]), _interval(p["bwt"]),
                 _interval(p["prior_drop"])] + ([_interval(p["near_drop"])] if near else []) for p in pairs]  # fmt: skip
        lines += [*_table(header, rows), ""]
    tasks = list(results["stage_tasks"])
    for setting, v in agg.items():
        if not v["seeds"]:
            continue
        lines += [f"### {setting}: each task after each stage (mean ± std over {len(v['seeds'])} seeds)", ""]
        rows = [[_stage_label(i, tasks)] + [_pm((v["matrix_mean"][i, j], v["matrix_std"][i, j]))
                                            for j in range(len(v["columns"]))]
                for i in range(v["matrix_mean"].shape[0])]  # fmt: skip
        lines += [*_table(["stage", *v["columns"]], rows), ""]
    return lines


def trajectories(results: Mapping[str, Any]) -> list[str]:
    """The seed-style table as text lines: per setting, each task's score after each stage, e.g.
    ``  record_json   0.00 → 0.91 → 0.40 → 0.38`` (means over finished seeds when there are several)."""
    agg = aggregate(results)
    columns = [*results["stage_tasks"], *results.get("near_tasks", []), *results.get("prior_tasks", [])]
    width = max(map(len, columns), default=8)
    lines = []
    for setting, labels in settings_of(results).items():
        if len(labels) > 1 and agg[setting]["seeds"]:
            M, title = agg[setting]["matrix_mean"], f"{setting} (mean of {len(agg[setting]['seeds'])} seeds)"
        else:  # one run, or none finished: the most advanced run, by name
            label = max(labels, key=lambda name: len(results["methods"][name].get("stages", [])))
            M, title = matrix_from_results(results, label, columns), label
        if not M.shape[0]:
            lines.append(f"{title}: not started")
            continue
        lines.append(f"{title}:  base → " + " → ".join(f"after {t}" for t in results["stage_tasks"][: M.shape[0] - 1]))
        for j, name in enumerate(columns):
            kind = "" if j < len(results["stage_tasks"]) else " (near)" if name in results.get("near_tasks", []) else " (prior)"
            values = " → ".join("  —" if not math.isfinite(x) else f"{x:.2f}" for x in M[:, j])
            lines.append(f"  {(name + kind).ljust(width + 8)} {values}")
    return lines


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
    """One panel per stage task, per near-prior and prior task, and the averages; x = stage, one line per setting
    (the mean over its finished seeds, with a ±std band, when it has several)."""
    tasks, near, priors = list(results["stage_tasks"]), list(results.get("near_tasks", [])), list(results["prior_tasks"])
    panels = tasks + near + (["near-prior average"] if near else []) + priors + (["prior average"] if priors else [])
    ncols = min(3, len(panels)) or 1
    nrows = max(1, math.ceil(len(panels) / ncols))
    figure = _new_figure(4.2 * ncols, 3.2 * nrows)
    axes = np.atleast_1d(figure.subplots(nrows, ncols, squeeze=False)).ravel()
    agg = aggregate(results)

    def with_averages(M: np.ndarray) -> np.ndarray:
        R, N, P = M[:, : len(tasks)], M[:, len(tasks) : len(tasks) + len(near)], M[:, len(tasks) + len(near) :]
        parts = [R, N] + ([prior_average(N)[:, None]] if near else []) + [P] + ([prior_average(P)[:, None]] if priors else [])
        return np.column_stack(parts)

    columns, bands = {}, {}
    for setting, labels in settings_of(results).items():
        if len(labels) > 1 and agg[setting]["seeds"]:
            runs = [matrix_from_results(results, label, [*tasks, *near, *priors]) for label in agg[setting]["seeds"].values()]
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


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    prior: float
    """Prior-capability average at the end (mean over the setting's finished seeds)."""
    acc: float
    """ACC at the end (mean over the setting's finished seeds)."""
    prior_std: float
    acc_std: float
    """Sample std across seeds (NaN for one seed)."""
    ours: bool
    """From this run directory (not a sibling)."""


def _setting_points(results: Mapping[str, Any]) -> list[tuple[str, float, float, float, float]]:
    """``(setting, prior mean, acc mean, prior std, acc std)``; a setting of one run uses it even while partial."""
    points = []
    groups = settings_of(results)
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


def pareto_points(results: Mapping[str, Any], run_dir: Path) -> list[ParetoPoint]:
    """One point per setting of this run (mean over seeds, with the std across seeds), then per setting of each
    sibling run with the same stage tasks (labelled ``run/setting``); points missing a coordinate are left out."""
    points = []
    for run_name, run in [(None, results), *_sibling_runs(Path(run_dir), results["stage_tasks"])]:
        for setting, x, y, xerr, yerr in _setting_points(run):
            label = setting if run_name is None else f"{run_name}/{setting}"
            points.append(ParetoPoint(label, x, y, xerr, yerr, run_name is None))
    return points


def _plot_pareto(results: Mapping[str, Any], run_dir: Path, path: Path) -> None:
    """x = prior-capability average at the end, y = mean stage-task accuracy at the end; one point per setting,
    error bars = std across seeds."""
    figure = _new_figure(6.4, 4.8)
    ax = figure.subplots()
    points = pareto_points(results, run_dir)
    colors: dict[str, str] = {}  # one color per setting name, across runs; the marker tells the runs apart
    for p in points:
        color = colors.setdefault(p.label.rsplit("/", 1)[-1], f"C{len(colors) % 10}")
        style = {"markersize": 9, "zorder": 3, "marker": "o"} if p.ours else {"markersize": 6, "alpha": 0.6, "marker": "s"}
        xerr = p.prior_std if math.isfinite(p.prior_std) else None
        yerr = p.acc_std if math.isfinite(p.acc_std) else None
        ax.errorbar([p.prior], [p.acc], xerr=xerr, yerr=yerr, label=p.label, color=color, capsize=3, linestyle="none",
                    **style)  # fmt: skip
        ax.annotate(p.label, (p.prior, p.acc), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for method in results["methods"]:  # the common starting point, for reference
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
    near = ", ".join(results.get("near_tasks", [])) or "—"
    lines += [f"model: `{results.get('model', '?')}` · stages: {' → '.join(tasks) or '—'} · near-prior tasks: {near} · "
              f"prior tasks: {', '.join(results['prior_tasks']) or '—'} · runs: {', '.join(methods) or '—'}"
              + (" · **stage tasks scored on their validation split**" if results.get("eval_split") == "validation"
                 else ""), ""]  # fmt: skip
    lines += ["## What was learned, what was lost", ""]
    lines += [_summary_line(method, summaries[method], tasks) for method in methods] + [""]
    lines += ["## Metrics", "", *_metrics_table(results, summaries), ""]
    lines += ["ACC: mean final score over the stage tasks. BWT: mean change of each earlier task from just after its "
              "stage to the end (negative = forgetting). FWT: mean score of a task just before its stage minus at "
              "base. Forgetting: best score after the task's stage minus final. Prior drop: prior average at base "
              "minus at the end (positive = lost); near drop: the same for the near-prior tasks (what the base model "
              "did on the skills' own surface). Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018.", ""]
    if is_multi(results):
        lines += _across_seeds(results)
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
