"""Turn a continual run directory into ``report.md`` and PNG plots, from ``results.json`` and ``metrics.jsonl`` only.

    write_report(Path("runs/demo"))      # → runs/demo/report.md, accuracy_by_stage.png, pareto.png, ...

The run directory holds ``results.json`` (its schema: ``selfdistill.continual.results``) and, in each stage's
``train_dir``, ``metrics.jsonl``: one JSON object per optimizer step with ``step``, ``loss``, ``lr``,
``seconds_per_step`` and, for SDFT, ``kl``, ``teacher_minus_student_logprob``, ``student_entropy``,
``completion_length``. Missing keys, files and stages are skipped, so a partial run reports what it has. The Pareto
plot also shows every sibling run directory (same parent) with the same ``stage_tasks``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selfdistill.continual.budget_report import budget_section
from selfdistill.continual.config import ReportConfig
from selfdistill.continual.metrics import (
    aggregate,
    comparisons,
    matrix_from_results,
    prior_average,
    summarize_method,
)
from selfdistill.continual.plots import (
    ParetoPoint,
    pareto_points,
    plot_accuracy_by_stage,
    plot_matrix,
    plot_pareto,
    plot_training,
)
from selfdistill.continual.results import (
    RESULTS_FILE,
    Results,
    ResultsError,
    as_results,
    fmt_num,
    load_results,
    read_metrics_jsonl,
    safe_name,
    stage_label,
)
from selfdistill.fileio import write_text_atomic
from selfdistill.markdown import table

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
__all__ = [
    "RESULTS_FILE",
    "ParetoPoint",
    "ReportConfig",
    "Results",
    "ResultsError",
    "load_results",
    "pareto_points",
    "read_metrics_jsonl",
    "trajectories",
    "write_report",
]


# ---------------------------------------------------------------- markdown


def _cell(value: float, stderr: float) -> str:
    text = fmt_num(value)
    return f"{text} ± {stderr:.3f}" if math.isfinite(value) and math.isfinite(stderr) else text


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _seed_table(results: Results, method: str) -> list[str]:
    """Rows = stages, columns = each stage task, then the near-prior average and tasks, then the prior average and
    tasks (± stderr)."""
    tasks = results.stage_tasks
    R, R_err = (matrix_from_results(results, method, tasks, field) for field in ("metrics", "stderr"))
    groups = [("near avg", results.near_tasks), ("prior avg", results.prior_tasks)]
    parts = [
        (label, names, *(matrix_from_results(results, method, names, f) for f in ("metrics", "stderr")))
        for label, names in groups
        if names
    ]
    rows = []
    for i in range(R.shape[0]):
        cells = [_cell(R[i, j], R_err[i, j]) for j in range(len(tasks))]
        for _, names, P, P_err in parts:
            cells += [fmt_num(prior_average(P)[i])] + [_cell(P[i, m], P_err[i, m]) for m in range(len(names))]
        rows.append([stage_label(i, tasks), *cells])
    header = ["stage", *tasks] + [c for label, names, *_ in parts for c in (label, *names)]
    return table(header, rows)


def _metrics_table(results: Results, summaries: Mapping[str, dict[str, Any]]) -> list[str]:
    tasks = results.stage_tasks
    near = bool(results.near_tasks)
    header = ["run", "stages", "ACC", "BWT", "FWT", *(f"forgetting {t}" for t in tasks)]
    header += ["prior base", "prior end", "prior drop"] + (["near base", "near end", "near drop"] if near else [])
    header += ["train time"]
    rows = []
    for method, s in summaries.items():
        seconds = sum(stage.train_seconds for stage in results.runs[method].ordered_stages)
        rows.append(
            [
                method,
                f"{s['stages_done']}/{len(tasks)}",
                fmt_num(s["acc"]),
                fmt_num(s["bwt"], True),
                fmt_num(s["fwt"], True),
            ]
            + [fmt_num(s["forgetting"][t]) for t in tasks]
            + [fmt_num(s["prior_base"]), fmt_num(s["prior_end"]), fmt_num(s["prior_drop"], True)]
            + ([fmt_num(s["near_base"]), fmt_num(s["near_end"]), fmt_num(s["near_drop"], True)] if near else [])
            + [_duration(seconds)]
        )
    return table(header, rows)


def _pm(value: tuple[float, float, int] | Sequence[float], signed: bool = False) -> str:
    mean, std = float(value[0]), float(value[1])
    return fmt_num(mean, signed) + (f" ± {std:.3f}" if math.isfinite(mean) and math.isfinite(std) else "")


def _interval(d: Mapping[str, float]) -> str:
    if not math.isfinite(d["mean"]):
        return "—"
    if not math.isfinite(d["lo"]):
        return f"{d['mean']:+.3f} (n={d['n']})"
    # the interval excludes 0; not claimed from fewer than 3 pairs or pairs that all differ by the same amount
    mark = " *" if d["n"] >= 3 and d["hi"] > d["lo"] and (d["lo"] > 0 or d["hi"] < 0) else ""
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]{mark}"


def is_multi(results: Results | Mapping[str, Any]) -> bool:
    """Whether the run has settings with several seeds or sweeps: then the report aggregates across runs."""
    results = as_results(results)
    groups = results.settings_of()
    return any(len(labels) > 1 for labels in groups.values()) or any(g not in results.runs for g in groups)


def _across_seeds(results: Results) -> list[str]:
    """Mean ± std per setting over its finished seeds, paired differences with 95% intervals, and per-cell tables."""
    agg = aggregate(results)
    near = bool(results.near_tasks)
    n_seeds = sorted({len(v["runs"]) for v in agg.values()})
    lines = [
        "## Across seeds",
        "",
        f"Each setting runs once per seed ({'/'.join(map(str, n_seeds))} seeds); a run counts here once all its "
        "stages are done. Mean ± sample std over those runs.",
        "",
    ]
    header = ["setting", "seeds done", "ACC", "BWT", "prior end", "prior drop"] + (
        ["near end", "near drop"] if near else []
    )
    rows = []
    for setting, v in agg.items():
        sc = v["scalars"]
        rows.append(
            [
                setting,
                f"{len(v['seeds'])}/{len(v['runs'])}",
                _pm(sc["acc"]),
                _pm(sc["bwt"], True),
                _pm(sc["prior_end"]),
                _pm(sc["prior_drop"], True),
            ]
            + ([_pm(sc["near_end"]), _pm(sc["near_drop"], True)] if near else [])
        )
    lines += [*table(header, rows), ""]
    pairs = comparisons(results, agg)
    if pairs:
        lines += [
            "### Paired differences",
            "",
            "Setting minus reference, paired by seed, mean [95% t-interval over seeds]; * marks an interval that "
            "excludes 0 (from 3 or more seeds). The interval is about training and sampling noise on these "
            "evaluation items; it does not cover which items were drawn, and comparisons are not corrected for "
            "their number. Higher ACC/BWT is better; a lower (more negative) prior or near drop is better.",
            "",
        ]
        header = ["setting − reference", "ACC", "BWT", "prior drop"] + (["near drop"] if near else [])
        rows = [
            [f"{p['setting']} − {p['reference']}", _interval(p["acc"]), _interval(p["bwt"]), _interval(p["prior_drop"])]
            + ([_interval(p["near_drop"])] if near else [])
            for p in pairs
        ]
        lines += [*table(header, rows), ""]
    tasks = results.stage_tasks
    for setting, v in agg.items():
        if not v["seeds"]:
            continue
        lines += [f"### {setting}: each task after each stage (mean ± std over {len(v['seeds'])} seeds)", ""]
        rows = [
            [stage_label(i, tasks)]
            + [_pm((v["matrix_mean"][i, j], v["matrix_std"][i, j])) for j in range(len(v["columns"]))]
            for i in range(v["matrix_mean"].shape[0])
        ]
        lines += [*table(["stage", *v["columns"]], rows), ""]
    return lines


def trajectories(results: Results | Mapping[str, Any]) -> list[str]:
    """The seed-style table as text lines: per setting, each task's score after each stage, e.g.
    ``  record_json   0.00 → 0.91 → 0.40 → 0.38`` (means over finished seeds when there are several)."""
    results = as_results(results)
    agg = aggregate(results)
    columns = results.columns
    width = max(map(len, columns), default=8)
    lines = []
    for setting, labels in results.settings_of().items():
        if len(labels) > 1 and agg[setting]["seeds"]:
            M, title = agg[setting]["matrix_mean"], f"{setting} (mean of {len(agg[setting]['seeds'])} seeds)"
        else:  # one run, or none finished: the most advanced run, by name
            label = max(labels, key=lambda name: len(results.runs[name].stages))
            M, title = matrix_from_results(results, label, columns), label
        if not M.shape[0]:
            lines.append(f"{title}: not started")
            continue
        lines.append(f"{title}:  base → " + " → ".join(f"after {t}" for t in results.stage_tasks[: M.shape[0] - 1]))
        for j, name in enumerate(columns):
            kind = "" if j < len(results.stage_tasks) else " (near)" if name in results.near_tasks else " (prior)"
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
    if s["near_drop"] > 0.0005:  # NaN (no near-prior tasks) compares False
        lost.append(f"near-prior average {s['near_drop']:.3f} ({s['near_base']:.3f}→{s['near_end']:.3f})")
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


# ---------------------------------------------------------------- entry points


def write_report(run_dir: Path) -> Path:
    """Write ``report.md`` and the PNG plots into ``run_dir``; return the path of ``report.md``."""
    run_dir = Path(run_dir)
    results = Results.load(run_dir)
    tasks, methods = results.stage_tasks, list(results.runs)
    summaries = {method: summarize_method(results, method) for method in methods}
    plot_accuracy_by_stage(results, run_dir / "accuracy_by_stage.png")
    plot_pareto(results, run_dir, run_dir / "pareto.png")

    lines = [f"# Continual run `{run_dir.resolve().name}`", ""]
    near = ", ".join(results.near_tasks) or "—"
    lines += [
        f"model: `{results.model or '?'}` · stages: {' → '.join(tasks) or '—'} · near-prior tasks: {near} · "
        f"prior tasks: {', '.join(results.prior_tasks) or '—'} · runs: {', '.join(methods) or '—'}"
        + (" · **stage tasks scored on their validation split**" if results.eval_split == "validation" else ""),
        "",
    ]
    lines += ["## What was learned, what was lost", ""]
    lines += [_summary_line(method, summaries[method], tasks) for method in methods] + [""]
    lines += ["## Metrics", "", *_metrics_table(results, summaries), ""]
    lines += [
        "ACC: mean final score over the stage tasks. BWT: mean change of each earlier task from just after its "
        "stage to the end (negative = forgetting). FWT: mean score of a task just before its stage minus at "
        "base. Forgetting: best score after the task's stage minus final. Prior drop: prior average at base "
        "minus at the end (positive = lost); near drop: the same for the near-prior tasks (what the base model "
        "did on the skills' own surface). Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018.",
        "",
    ]
    if is_multi(results):
        lines += _across_seeds(results)
    lines += budget_section(results, run_dir)
    lines += ["![accuracy by stage](accuracy_by_stage.png)", "", "![pareto](pareto.png)", ""]
    for method in methods:
        config = _config_line(results.runs[method].config)
        lines += [f"## {method}", ""] + ([config, ""] if config else [])
        lines += ["Score of each task (rows: after each stage; primary metric ± stderr).", ""]
        lines += [*_seed_table(results, method), ""]
        if summaries[method]["matrix"]:
            plot_matrix(results, method, run_dir / f"matrix_{safe_name(method)}.png")
            lines += [f"![{method} accuracy matrix](matrix_{safe_name(method)}.png)", ""]
        if plot_training(results, run_dir, method, run_dir / f"training_{safe_name(method)}.png"):
            lines += [f"![{method} training curves](training_{safe_name(method)}.png)", ""]

    report = run_dir / REPORT_FILE
    write_text_atomic(report, "\n".join(lines))  # a reader never sees half a report while a run rewrites it
    logger.info("wrote %s", report)
    return report


def run_report_cli(cfg: ReportConfig) -> Path:
    return run_report(cfg.run_dir)


def run_report(run_dir: Path | str) -> Path:
    """``selfdistill report DIR``: check DIR, then ``write_report``. Raises FileNotFoundError or ResultsError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    return write_report(run_dir)
