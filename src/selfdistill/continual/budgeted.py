"""A plan's stages under a forgetting budget: what each stage guards, the references it is held to, the files a plan
names checked before any work, and each stage's ``selection.json`` read into its results record.

    check_plan_inputs(plan)                                  # PlanError, one line, before the base model is scored
    earlier, keep = stage_guards(plan, setting, k)           # what stage k guards besides its own defaults
    refs = guard_references(plan, record, k)                 # its guard_base: {"guards", "test", "drift_loglik"}

In a plan every earlier stage's task joins the guard set of the stages after it (passed to ``train`` as
``guard_stages``), and so do the near-prior tasks the earlier stages guarded (as ``keep``).
The budget is cumulative from the plan's start model (``budget.py`` says why): a guard keeps the reference it had
when it was first measured (its score on the start model of the first stage that measured it), and an earlier skill
is held to its kept selection score at the end of its own stage. Those references reach ``train`` as the
``guard_base`` file; a guard first measured in stage k (the new skill's near-prior task) is referenced to stage k's
start model, the only model it was measured on.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from selfdistill.config import SourceConfig
from selfdistill.continual.plan import Plan, PlanError
from selfdistill.continual.results import GuardRecord, RunRecord, StageRecord, TrainingEval
from selfdistill.errors import UserError
from selfdistill.evaluation.guard import item_key, near_tasks_of, resolve_guards, resolve_selection
from selfdistill.evaluation.tasks import TASKS, Task
from selfdistill.evaluation.tasks.base import ChoiceTask

SELECTION_FILE = "selection.json"
"""What ``train --eval-every`` writes into its output: the evaluation points, the guards, the kept step."""


def evaluates_during_training(overrides: dict[str, Any]) -> bool:
    """Whether a stage's training evaluates every few steps (and so has guards and a ``selection.json``)."""
    return bool(overrides.get("eval_every"))


def is_budgeted(plan: Plan) -> bool:
    """Whether any stage of any setting evaluates during training."""
    return any(evaluates_during_training(plan.train_overrides(s, st)) for s in plan.methods for st in plan.stages)


def stage_guards(plan: Plan, setting: str, k: int) -> tuple[list[str], list[str]]:
    """Stage ``k``'s (1-based) extra guards as ``(guard_stages, keep)``: every earlier stage's test task (guarded as
    a stage), and what the plan names plus the near-prior tasks the earlier stages guarded (what the start model
    did on those skills' surface stays guarded to the end of the plan)."""
    named = list(plan.train_overrides(setting, plan.stages[k - 1]).get("keep") or [])
    learning = plan.stages[k - 1].data
    earlier = [stage.test.spec for stage in plan.stages[: k - 1]]
    near = [n for stage in plan.stages[: k - 1] if stage.data in TASKS for n in near_tasks_of(stage.data)]
    keep = named + [name for name in dict.fromkeys(near) if name not in named and name != learning]
    return [spec for spec in earlier if spec not in named], keep


def guard_references(plan: Plan, record: RunRecord, k: int) -> dict[str, Any]:
    """The ``guard_base`` of stage ``k`` from the run's finished earlier stages (``{"guards", "test",
    "drift_loglik"}``): each guard's first reference, on the selection and the test side (cumulative from the start
    model), and each earlier skill's kept scores as its own reference."""
    guards: dict[str, float] = {}
    test: dict[str, float] = {}
    drift: dict[str, float | None] | None = None
    for stage in record.ordered_stages:
        if not 0 < stage.index < k:
            continue
        for name, guard in stage.guards.items():
            if guard.base is not None:
                guards.setdefault(name, guard.base)
            if guard.test_base is not None:
                test.setdefault(name, guard.test_base)
        drift = drift or stage.drift_loglik
        skill = plan.stages[stage.index - 1].test.name
        kept = kept_point(stage)
        if kept is not None and kept.selection is not None:
            guards[skill] = kept.selection
        if stage.kept_test is not None and stage.kept_test.selection is not None:
            test[skill] = stage.kept_test.selection
    refs: dict[str, Any] = {"guards": guards, "test": test}
    return {**refs, "drift_loglik": drift} if drift else refs


def kept_point(stage: StageRecord) -> TrainingEval | None:
    """The evaluation point whose weights the stage handed on (its last point when it kept its last step)."""
    if not stage.training_evals:
        return None
    if stage.kept_step is None:
        return max(stage.training_evals, key=lambda point: point.step)
    return next((p for p in stage.training_evals if p.step == stage.kept_step), None)


def write_guard_base(path: Path, refs: dict[str, Any]) -> Path:
    """The ``guard_base`` file ``train`` reads (``training/selection.py`` describes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------- before any work
def check_plan_inputs(plan: Plan) -> None:
    """Load every anchor, keep task and selection split the plan names, for every setting and stage, so a missing
    or unscorable one fails in one line (a PlanError naming the setting, stage and option) before anything is
    evaluated or written."""
    for setting in plan.methods:
        for k, stage in enumerate(plan.stages, start=1):
            overrides = plan.train_overrides(setting, stage)
            where = f"methods.{setting} at stages[{k - 1}] ({stage.name})"
            try:
                _check_anchor(overrides.get("anchor"), stage.data, plan.data_dir)
                if evaluates_during_training(overrides):
                    _check_guards(plan, setting, k, overrides)
            except UserError as err:
                raise PlanError(f"{where}: {err}") from None


def _check_anchor(anchor: str | None, data: str, data_dir: Path | None) -> None:
    if not anchor:
        return
    from selfdistill.training.anchor import load_anchor  # torch: only a plan with an anchor pays for it here
    from selfdistill.training.setup import load_training_examples

    load_anchor(anchor, data_dir, load_training_examples(data, SourceConfig(data_dir=data_dir)))


def _check_guards(plan: Plan, setting: str, k: int, overrides: dict[str, Any]) -> None:
    stage = plan.stages[k - 1]
    learning = stage.data if stage.data in TASKS else None
    limit = overrides.get("eval_limit")
    earlier, keep = stage_guards(plan, setting, k)
    resolve_guards(learning, keep=keep, earlier=earlier, limit=limit, data_dir=plan.data_dir)
    test = None if learning else stage.test.spec
    selection = overrides.get("selection")
    resolve_selection(stage.data, selection=selection, test=test, limit=limit, data_dir=plan.data_dir)


# -------------------------------------------------------------------------------------------- selection.json
def read_selection(stage_dir: Path) -> dict[str, Any]:
    """The ``StageRecord`` fields a stage's ``selection.json`` fills (none where the stage did not evaluate)."""
    path = stage_dir / SELECTION_FILE
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    points = [TrainingEval.from_json(point) for point in raw.get("points") or []]
    base = (raw.get("base") or {}).get("guards") or {}
    test_base = (raw.get("test_base") or {}).get("guards") or {}
    guards = {
        g["name"]: GuardRecord(
            g.get("origin", ""),
            int(g.get("n") or 0),
            float(g.get("resolution") or 0.0),
            base.get(g["name"]),
            test_base.get(g["name"]),
        )
        for g in raw.get("guards") or []
    }
    kept = raw.get("kept")
    kept_step = kept["step"] if kept else None
    last = max((p.step for p in points), default=0)
    tested = raw.get("test")
    return {
        "training_evals": points,
        "kept_step": kept_step,
        "budget": raw.get("budget"),
        "guards": guards,
        "kept_test": TrainingEval.from_json({"step": last if kept_step is None else kept_step, **tested})
        if tested
        else None,
        "test_base": TrainingEval.from_json({"step": 0, **raw["test_base"]}) if raw.get("test_base") else None,
        "drift_loglik": raw.get("drift_loglik"),
    }


def guard_base_path(run_dir: Path, stage_dir_name: str) -> Path:
    """Where a stage's references are written: beside its directory, which then holds only what ``train`` wrote."""
    return run_dir / f"{stage_dir_name}.guard_base.json"


def quoted_part(spec: str, task: Task, data_dir: Path | None) -> Task:
    """``task`` scored only on the items a guard of it never selects on: its test split where it has a validation
    split (guards select on that), else the test half of the guard's cut (``guard.py``). The report quotes these, so
    a guard's selection items are never among the numbers it shows."""
    if getattr(task, "has_validation", False):
        return task
    guard = resolve_guards(None, prior=[spec], data_dir=data_dir)[0]
    quoted = {item_key(item) for item in guard.test_items}
    clone = copy.copy(task)
    if isinstance(task, ChoiceTask):
        items = [item for item in task.test_items() if item_key(item) in quoted]
        clone.test_items = lambda: list(items)
    else:
        examples = [ex for ex in task.test_examples() if item_key(ex) in quoted]
        clone.test_examples = lambda: list(examples)
    return clone
