"""Continual-learning metrics: pure functions on the accuracy matrix of a sequential run.

    R = matrix_from_results(results, "sdft", results["stage_tasks"])
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


# ---------------------------------------------------------------- results.json → matrices → summary


def matrix_from_results(
    results: Mapping[str, Any],
    method: str,
    tasks: Sequence[str],
    field: Literal["metrics", "stderr"] = "metrics",
) -> np.ndarray:
    """Matrix ``(stages, len(tasks))`` of each task's primary metric (or its stderr) for ``method``.

    Row ``i`` is the stage with ``index == i``; a stage, task, or metric that is missing reads as NaN.
    """
    stages = results["methods"][method].get("stages", [])
    rows = 1 + max((int(stage["index"]) for stage in stages), default=-1)
    out = np.full((rows, len(tasks)), math.nan)
    for stage in stages:
        evals = stage.get("eval") or {}
        for j, task in enumerate(tasks):
            entry = evals.get(task) or {}
            value = (entry.get(field) or {}).get(entry.get("primary", ""))
            if isinstance(value, int | float):
                out[int(stage["index"]), j] = float(value)
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


def summarize_method(results: Mapping[str, Any], method: str) -> dict[str, Any]:
    """All the metrics of one method, as plain (possibly NaN) floats; see ``summarize``."""
    tasks = list(results["stage_tasks"])
    R = matrix_from_results(results, method, tasks)
    P = matrix_from_results(results, method, list(results.get("prior_tasks", [])))
    priors = prior_average(P)
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
        "matrix": R.tolist(),
    }


def summarize(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method: ``stages_done``, ``acc``, ``bwt``, ``fwt``, ``forgetting`` and ``gain`` (task → value),
    ``prior_by_stage``, ``prior_base``, ``prior_end``, ``prior_drop``, and the ``matrix`` R.

    JSON-serialisable: undefined values (NaN) become ``None``.
    """
    return {method: _json(summarize_method(results, method)) for method in results["methods"]}
