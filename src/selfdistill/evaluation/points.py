"""What a run scores at each evaluation point during training: the setup resolved before any work, and the scoring
of one side (selection items at every point, test items once on the kept model), cached for the start model.

    setup = resolve_evaluation(cfg)                                  # None without --eval-every
    scores = score(model, tok, setup, "selection", fingerprint(model))

Scored as ``selfdistill eval`` scores a saved model (greedy, fp32, batches of :data:`EVAL_BATCH`), so a saved model
re-scores to the numbers recorded for its step. The hook that uses this is ``training/selection.py``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from selfdistill.errors import UserError
from selfdistill.evaluation.drift import DriftSample, drift_sample, mean_loglik
from selfdistill.evaluation.guard import (
    DEFAULT_PRIOR,
    Guard,
    GuardError,
    Selection,
    item_key,
    resolve_guards,
    resolve_selection,
)
from selfdistill.evaluation.tasks import TASKS, Task, get_task
from selfdistill.evaluation.tasks.base import ChoiceTask
from selfdistill.fileio import write_json_atomic
from selfdistill.models import cache_dir

if TYPE_CHECKING:
    from selfdistill.config import TrainConfig

EVAL_BATCH = 16
"""Prompts per generation batch: ``selfdistill eval``'s default, so the saved model re-scores to the same numbers."""


@dataclass(frozen=True)
class EvalSetup:
    """What a run evaluates, resolved before any work."""

    selection: Selection
    """The learned task's selection split (and, after a hold-out, the rows left to train on)."""
    guards: tuple[Guard, ...]
    """Guard tasks, each with disjoint selection and test items."""
    drift: DriftSample | None
    """The label-free log-likelihood guard's passages (None with --no-drift)."""
    test_task: Task | None
    """The learned task's test split, for a registered task (None for user data)."""
    every: int
    """Optimizer steps between points."""
    budget: float | None
    """The forgetting budget D (None: record points, keep the last step)."""
    patience: int | None
    """Points in a row that broke the budget or did not improve before training stops."""
    limit: int
    """Items per task at each point and on the test side."""
    refs: dict[str, Any] = field(default_factory=dict)
    """References a plan passes (``guard_base``)."""


def resolve_evaluation(cfg: TrainConfig, prior: tuple[str, ...] = DEFAULT_PRIOR) -> EvalSetup | None:
    """The run's evaluation (None without --eval-every); one-line UserErrors for anything that cannot be scored."""
    ev = cfg.evaluation
    if ev.eval_every is None:
        return None
    data, data_dir = cfg.data, cfg.source.data_dir
    if data not in TASKS and ev.selection is None and (cfg.source.columns or not data.endswith(".jsonl")):
        raise GuardError(
            f"--eval-every: {data} is not a JSONL file or a task to hold selection rows out of; "
            "pass --selection FILE.jsonl"
        )
    selection = resolve_selection(
        data, selection=ev.selection, seed=cfg.run.seed, limit=ev.eval_limit, data_dir=data_dir
    )
    learning = data if data in TASKS else None
    guards = resolve_guards(
        learning, keep=ev.keep, earlier=ev.guard_stages, prior=prior, limit=ev.eval_limit, data_dir=data_dir
    )
    drift = drift_sample(data_dir) if ev.drift else None
    if ev.forgetting_budget is not None and not guards and drift is None:
        raise GuardError("--forgetting-budget: no guard task to hold it to (add --keep TASK, or leave --drift on)")
    test_task = get_task(data, data_dir) if learning is not None else None
    refs = _read_guard_base(ev.guard_base) if ev.guard_base is not None else {}
    return EvalSetup(
        selection,
        tuple(guards),
        drift,
        test_task,
        ev.eval_every,
        ev.forgetting_budget,
        ev.patience,
        ev.eval_limit,
        refs,
    )


def _read_guard_base(path: Path) -> dict[str, Any]:
    try:
        refs = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"--guard-base {path}: unreadable ({err})") from None
    if not isinstance(refs, dict) or set(refs) - {"guards", "test", "drift_loglik"}:
        raise UserError(f"--guard-base {path}: expected an object with keys guards, test, drift_loglik")
    return refs


# ----------------------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Scores:
    """One side's raw scores of one model."""

    selection: float | None
    """The learned task's primary score (None: no such split)."""
    guards: dict[str, float]
    """Guard task → primary score (the drift guard is in ``loglik``)."""
    loglik: float | None
    """Mean log-likelihood per token of the drift passages."""

    def to_json(self) -> dict[str, Any]:
        return {"selection": self.selection, "guards": self.guards, "loglik": self.loglik}


def score(model, tok, setup: EvalSetup, side: str, fingerprint: str | None = None, progress: bool = False) -> Scores:
    """``side`` "selection" (every point) or "test" (the kept model); per task from the cache when ``fingerprint``
    names the weights (the start model)."""
    guards = {g.name: g.selection_task() if side == "selection" else g.test_task() for g in setup.guards}
    learned = setup.selection.task if side == "selection" else setup.test_task
    tasks = {**({"": learned} if learned is not None else {}), **guards}
    out: dict[str, float] = {}
    for name, task in tasks.items():
        key = _cache_key(fingerprint, side, task, setup.limit) if fingerprint else None
        if (cached := _cached(key)) is None:
            from selfdistill.evaluation.evaluate import evaluate_tasks

            limit = setup.limit if side == "test" else None  # selection items are cut already; test splits not
            result = evaluate_tasks(model, tok, [task], limit=limit, batch_size=EVAL_BATCH, progress=progress)
            cached = _store(key, result[task.name]["metrics"][task.primary_metric])
        out[name] = cached
    loglik = None
    if setup.drift is not None:
        texts = setup.drift.selection if side == "selection" else setup.drift.test
        key = _text_key(fingerprint, texts) if fingerprint else None
        loglik = _cached(key) if key else None
        loglik = loglik if loglik is not None else _store(key, mean_loglik(model, tok, texts))
    return Scores(out.pop("", None), out, loglik)


NOT_ARCHITECTURE = ("selfdistill", "transformers_version", "architectures", "dtype", "torch_dtype")
"""Config entries a save adds or rewrites without changing what the model computes (each tensor's dtype is hashed)."""


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of the weights and the architecture: the cache key of the start model's scores. Where the model was
    loaded from and what a save writes (``_name_or_path``, ``NOT_ARCHITECTURE``) are left out: a stage that kept its
    start weights hands on a model with the start model's scores."""
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k not in NOT_ARCHITECTURE}
    digest = hashlib.blake2b(json.dumps(config, sort_keys=True, default=str).encode(), digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _cache_key(fp: str, side: str, task: Task, limit: int) -> str:
    items = task.test_items() if isinstance(task, ChoiceTask) else task.test_examples()
    what = [fp, side, task.name, type(task).__name__, getattr(task, "scorer", None), limit, EVAL_BATCH]
    what += [getattr(task, "max_new_tokens", None), [item_key(i) for i in items], str(torch.__version__)]
    return hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()


def _text_key(fp: str, texts: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps([fp, "loglik", list(texts), str(torch.__version__)]).encode()).hexdigest()


def _cached(key: str | None) -> float | None:
    path = cache_dir() / "evals" / f"{key}.json"
    if key is None or not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text())["score"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged entry is recomputed


def _store(key: str | None, value: float) -> float:
    if key is not None:
        (cache_dir() / "evals").mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_dir() / "evals" / f"{key}.json", {"score": value})
    return value
