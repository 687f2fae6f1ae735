"""Continual-learning metrics: pure functions on the accuracy matrix of a sequential run.

    results = Results.load(Path("runs/demo"))
    R = matrix_from_results(results, "sdft", results.stage_tasks)
    average_accuracy(R), backward_transfer(R), forward_transfer(R), forgetting(R)

``R`` has shape ``(S+1, N)``: row 0 is the base model (before any training), row ``i`` the model after training
stage ``i``, and column ``j`` the task trained at stage ``j+1``. A full run has ``S == N``; a run in progress has
``S < N`` and every function then uses the last row it has (``R[S]``) as "the end". Missing cells are NaN and are
left out of means; a metric with no defined term is NaN (never a warning). ``P`` has shape ``(S+1, M)``: the
prior-capability scores (tasks the model could do before training) after each stage.

References: Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (ACC, BWT, FWT);
Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning" (forgetting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from selfdistill.continual.results import Results, as_results
from selfdistill.stats import mean_std


def _nanmean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the finite entries; NaN when there are none (``np.nanmean`` would warn)."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    return float(finite.mean()) if finite.size else math.nan


def _check(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2:
        raise ValueError(f"accuracy matrix must be 2-D (stages+1, tasks), got shape {R.shape}")
    return R


def average_accuracy(R: np.ndarray) -> float:
    """ACC = (1/N) · Σ_j R[S, j]: mean accuracy over all tasks at the end (Lopez-Paz & Ranzato 2017).

    For a partial run the last row also counts the tasks not trained yet.
    """
    R = _check(R)
    return _nanmean(R[-1]) if R.shape[0] else math.nan


def backward_transfer(R: np.ndarray) -> float:
    """BWT = (1/(N−1)) · Σ_{j<N−1} (R[N, j] − R[j+1, j]) (Lopez-Paz & Ranzato 2017).

    How much training on later tasks changed each earlier task, measured from just after it was trained;
    negative means forgetting. Over the tasks trained before the last finished stage ``S`` (``j ≤ S−2``);
    NaN when there are none (N = 1, or fewer than two stages done).
    """
    R = _check(R)
    last = R.shape[0] - 1
    return _nanmean([R[last, j] - R[j + 1, j] for j in range(min(last - 1, R.shape[1]))])


def forward_transfer(R: np.ndarray) -> float:
    """FWT = (1/(N−1)) · Σ_{j≥1} (R[j, j] − R[0, j]) (Lopez-Paz & Ranzato 2017, base model as the baseline).

    Accuracy on task ``j`` just *before* training it, minus its base accuracy: what earlier stages gave it for
    free. Over ``1 ≤ j ≤ min(S, N−1)``; NaN when N = 1 or no stage is done.
    """
    R = _check(R)
    last = R.shape[0] - 1
    return _nanmean([R[j, j] - R[0, j] for j in range(1, min(last, R.shape[1] - 1) + 1)])


def forgetting(R: np.ndarray) -> np.ndarray:
    """Per-task forgetting f_j = max_{k ∈ [j+1, S−1]} R[k, j] − R[S, j] (Chaudhry et al. 2018).

    The drop from the best accuracy task ``j`` had after it was trained to its accuracy at the end. Defined
    for tasks trained before the last finished stage (``j ≤ S−2``); NaN for the others, always for the last
    task of a full run.
    """
    R = _check(R)
    last = R.shape[0] - 1
    out = np.full(R.shape[1], math.nan)
    for j in range(min(last - 1, R.shape[1])):
        earlier = R[j + 1 : last, j]
        if np.isfinite(earlier).any() and np.isfinite(R[last, j]):
            out[j] = np.nanmax(earlier) - R[last, j]
    return out


def learning_gain(R: np.ndarray) -> np.ndarray:
    """Per-task gain g_j = R[j+1, j] − R[j, j]: what training on task ``j`` did to it, right after. NaN if not done."""
    R = _check(R)
    out = np.full(R.shape[1], math.nan)
    for j in range(min(R.shape[0] - 1, R.shape[1])):
        out[j] = R[j + 1, j] - R[j, j]
    return out


def prior_average(P: np.ndarray) -> np.ndarray:
    """Per-stage prior-capability average p_i = (1/M) · Σ_m P[i, m]; NaN for a stage with no scores."""
    P = _check(P)
    return np.array([_nanmean(row) for row in P], dtype=float)


def prior_drop(P: np.ndarray) -> float:
    """Prior-capability drop = p_0 − p_S (base average minus end average); positive means capability was lost."""
    averages = prior_average(P)
    return float(averages[0] - averages[-1]) if averages.size else math.nan


# ---------------------------------------------------------------- results → matrices → summary


def matrix_from_results(
    results: Results | Mapping[str, Any],
    method: str,
    tasks: Sequence[str],
    field: Literal["metrics", "stderr"] = "metrics",
) -> np.ndarray:
    """Matrix ``(stages, len(tasks))`` of each task's primary metric (or its stderr) for the run ``method``.

    Row ``i`` is the stage with ``index == i``; a stage, task, or metric that is missing reads as NaN.
    """
    stages = as_results(results).runs[method].stages
    out = np.full((1 + max((stage.index for stage in stages), default=-1), len(tasks)), math.nan)
    for stage in stages:
        for j, task in enumerate(tasks):
            if task in stage.eval:
                out[stage.index, j] = stage.eval[task].value(field)
    return out


def _json(value: Any) -> Any:
    """NaN/inf → None and numpy → plain Python, recursively, so ``json.dumps`` accepts the result."""
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def summarize_method(results: Results | Mapping[str, Any], method: str) -> dict[str, Any]:
    """All the metrics of one run, as plain (possibly NaN) floats; see ``summarize``."""
    results = as_results(results)
    tasks = results.stage_tasks
    R = matrix_from_results(results, method, tasks)
    P = matrix_from_results(results, method, results.prior_tasks)
    priors = prior_average(P)
    near = prior_average(matrix_from_results(results, method, results.near_tasks))
    return {
        "stages_done": max(R.shape[0] - 1, 0),
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R),
        "forgetting": dict(zip(tasks, forgetting(R).tolist(), strict=True)),
        "gain": dict(zip(tasks, learning_gain(R).tolist(), strict=True)),
        "prior_by_stage": priors.tolist(),
        "prior_base": float(priors[0]) if priors.size else math.nan,
        "prior_end": float(priors[-1]) if priors.size else math.nan,
        "prior_drop": prior_drop(P),
        "near_by_stage": near.tolist(),
        "near_base": float(near[0]) if near.size else math.nan,
        "near_end": float(near[-1]) if near.size else math.nan,
        "near_drop": float(near[0] - near[-1]) if near.size else math.nan,
        "matrix": R.tolist(),
    }


def summarize(results: Results | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per run: ``stages_done``, ``acc``, ``bwt``, ``fwt``, ``forgetting`` and ``gain`` (task → value),
    ``prior_by_stage``, ``prior_base``, ``prior_end``, ``prior_drop``, the same four for the near-prior tasks
    (``near_*``), and the ``matrix`` R.

    JSON-serialisable: undefined values (NaN) become ``None``.
    """
    results = as_results(results)
    return {method: _json(summarize_method(results, method)) for method in results.runs}


# ---------------------------------------------------------------- across seeds

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (t_{0.975, df}), standard table values.
# Above 30 the normal 1.96 is used: about 4% narrow at df 31, 2% at df 60.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)

SCALARS = ("acc", "bwt", "fwt", "prior_end", "prior_drop", "near_end", "near_drop")
"""The per-run numbers that are aggregated across seeds and compared between settings."""


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}, the half-width factor of a two-sided 95% interval; NaN for df < 1."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, float]:
    """Mean of ``a[seed] − b[seed]`` over the seeds both have (finite), with its 95% t-interval.

    ``{"mean", "lo", "hi", "n"}``; the interval is NaN with fewer than two pairs. Pairing by seed removes what two
    runs of one seed share (the order of the training batches); every run is scored on the same items, so the
    interval is about training and sampling noise, conditional on those items.
    """
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b)) if math.isfinite(a[s]) and math.isfinite(b[s])]
    mean, std, n = mean_std(diffs)
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def settings_of(results: Results | Mapping[str, Any]) -> dict[str, list[str]]:
    """Setting label → its run labels (in results order). A run without a ``setting`` is a setting of its own."""
    return as_results(results).settings_of()


def aggregate(results: Results | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per setting, across its seeds: ``seeds`` (seed → run label), ``per_seed`` (scalar → seed → value, finished
    runs only), ``scalars`` (name → (mean, std, n)), and ``matrix_mean``/``matrix_std`` over the finished runs of
    every task column (stage tasks, then near-prior, then prior tasks) after every stage.

    A run counts once it has every stage; a partial run would mix ends of different lengths.
    """
    results = as_results(results)
    columns = results.columns
    n_stages = len(results.stage_tasks)
    out: dict[str, dict[str, Any]] = {}
    for setting, labels in results.settings_of().items():
        seeds, per_seed = {}, {name: {} for name in SCALARS}
        matrices = []
        for k, label in enumerate(labels):
            recorded = results.runs[label].seed
            seed = k if recorded is None else recorded  # files from before seeds were recorded: by position
            summary = summarize_method(results, label)
            if summary["stages_done"] < n_stages:
                continue
            seeds[seed] = label
            for name in SCALARS:
                per_seed[name][seed] = summary[name]
            matrices.append(matrix_from_results(results, label, columns))
        stack = np.stack(matrices) if matrices else np.full((0, n_stages + 1, len(columns)), math.nan)
        mean = np.array([[mean_std(stack[:, i, j])[0] for j in range(stack.shape[2])] for i in range(stack.shape[1])])
        std = np.array([[mean_std(stack[:, i, j])[1] for j in range(stack.shape[2])] for i in range(stack.shape[1])])
        out[setting] = {
            "runs": labels,
            "seeds": seeds,
            "per_seed": per_seed,
            "scalars": {name: mean_std(list(per_seed[name].values())) for name in SCALARS},
            "columns": columns,
            "matrix_mean": mean.reshape(stack.shape[1], len(columns)),
            "matrix_std": std.reshape(stack.shape[1], len(columns)),
        }
    return out


def comparisons(
    results: Results | Mapping[str, Any], agg: Mapping[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Paired differences between settings: every setting against the plan's first setting and, when the first
    is not SFT, against the first SFT setting too. ``[{"setting", "reference", scalar → paired_difference}]``."""
    results = as_results(results)
    agg = aggregate(results) if agg is None else agg
    order = [s for s in results.settings or agg if s in agg]
    if not order:
        return []
    method_of = {s: results.runs[agg[s]["runs"][0]].method for s in order}
    references = [order[0]] + [next((s for s in order if method_of[s] == "sft"), order[0])]
    out = []
    for reference in dict.fromkeys(references):
        for setting in order:
            if setting == reference:
                continue
            entry: dict[str, Any] = {"setting": setting, "reference": reference}
            for name in SCALARS:
                entry[name] = paired_difference(agg[setting]["per_seed"][name], agg[reference]["per_seed"][name])
            out.append(entry)
    return out
