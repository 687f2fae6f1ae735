"""A continual plan's evaluation after every stage: the tasks it scores, loaded before any work, and one model's
scores on all of them (``eval.json`` and per-item ``predictions.jsonl``).

    tasks = load_tasks(plan)                       # [(column, task, limit)]; a missing data set fails here
    scores = evaluate_model("runs/x/sft/stage1-a", plan, tasks, out_dir, device, progress=False)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from selfdistill.cards import add_scores
from selfdistill.continual.budgeted import is_budgeted, quoted_part
from selfdistill.continual.plan import EvalTask, Plan, PlanError
from selfdistill.continual.results import TaskScore
from selfdistill.evaluation.evaluate import card_scores, evaluate_tasks
from selfdistill.evaluation.tasks import get_task
from selfdistill.evaluation.tasks.base import Task
from selfdistill.fileio import write_json_atomic
from selfdistill.models import load_model


def load_tasks(plan: Plan) -> list[tuple[str, Task, int | None]]:
    """Every evaluated task as ``(column name, task, limit)``, loaded now so a missing data set fails first. In a plan
    that evaluates during training, a task without a validation split is scored on the test half of its guard cut
    only: guards select on the other half, and the report must not quote items the kept step was chosen on."""
    entries: list[tuple[str, EvalTask]] = [(s.name, s.test) for s in plan.stages]
    entries += [(t.name, t) for t in plan.near] + [(t.name, t) for t in plan.prior]
    budgeted = is_budgeted(plan)
    out = []
    for k, (name, entry) in enumerate(entries):
        task = get_task(entry.spec, plan.data_dir)
        if budgeted:
            task = quoted_part(entry.spec, task, plan.data_dir)
        if k < len(plan.stages) and plan.eval_split == "validation":
            task = _on_validation(task, name)
        if task.kind == "generate":
            task.test_examples()
            if entry.max_new_tokens:  # an instance attribute shadows the class's budget for this run only
                task.max_new_tokens = entry.max_new_tokens
            elif plan.eval_max_new_tokens:
                task.max_new_tokens = min(task.max_new_tokens, plan.eval_max_new_tokens)
        else:
            task.test_items()
        out.append((name, task, entry.limit))
    return out


def evaluate_model(model_spec: str, plan: Plan, tasks, out_dir: Path, device: torch.device, progress: bool) -> dict:
    """Every task's scores for one model; ``eval.json`` and per-item ``predictions.jsonl`` go into ``out_dir``."""
    model, tok = load_model(model_spec, device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores: dict[str, Any] = {}
    with (out_dir / "predictions.jsonl").open("w", encoding="utf-8") as predictions:
        for name, task, limit in tasks:
            part = out_dir / f".{name}.predictions.tmp"  # evaluate_tasks writes one file per call
            result = evaluate_tasks(
                model,
                tok,
                [task],
                limit=limit,
                seed=plan.eval_seed,
                batch_size=plan.eval_batch_size,
                predictions_path=part,
                progress=progress,
            )
            scores[name] = next(iter(result.values()))
            for line in part.read_text(encoding="utf-8").splitlines():
                predictions.write(json.dumps({**json.loads(line), "task": name}) + "\n")
            part.unlink()
    write_json_atomic(out_dir / "eval.json", scores, indent=1)
    del model
    add_scores(out_dir, card_scores(scores), source=f"continual eval after {out_dir.name}")  # the stage model's card
    return scores


def typed_scores(scores: dict[str, dict[str, Any]]) -> dict[str, TaskScore]:
    """``evaluate_tasks``'s per-task scores as results.json records them."""
    return {name: TaskScore.from_json(entry) for name, entry in scores.items()}


def summary(scores: dict[str, Any]) -> str:
    return " · ".join(f"{name} {entry['metrics'][entry['primary']]:.3f}" for name, entry in scores.items())


def _on_validation(task: Task, name: str) -> Task:
    """``task`` scored on its validation split: a copy whose ``test_examples`` are the validation examples."""
    if not getattr(task, "has_validation", False):
        raise PlanError(f"eval.split: stage task {name!r} has no validation split")
    examples = task.validation_examples()
    clone = copy.copy(task)
    clone.test_examples = lambda: examples  # an instance attribute shadows the method for this run only
    return clone
