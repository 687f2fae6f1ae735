"""Task registry: a plain dict from name to task class, plus named suites.

task = get_task("arc_easy")            # data from default_data_dir()
task = get_task("my_eval.jsonl:number") # a user JSONL with `answer`, scored by a named scorer
"""

from __future__ import annotations

from pathlib import Path

from selfdistill.evaluation.tasks.base import (
    ChoiceItem,
    ChoiceTask,
    GenerationTask,
    LoglikRequest,
    LoglikResult,
    Task,
    TaskError,
    default_data_dir,
)
from selfdistill.evaluation.tasks.choice import CHOICE_TASKS
from selfdistill.evaluation.tasks.prior import PRIOR_TASKS
from selfdistill.evaluation.tasks.procedural import SKILL_TASKS
from selfdistill.evaluation.tasks.skills import GENERATION_TASKS
from selfdistill.evaluation.tasks.user import UserTask

TASKS: dict[str, type[Task]] = {**CHOICE_TASKS, **GENERATION_TASKS, **SKILL_TASKS, **PRIOR_TASKS}

SUITES: dict[str, tuple[str, ...]] = {
    "prior": (
        "hellaswag",
        "arc_easy",
        "arc_challenge",
        "piqa",
        "winogrande",
        "boolq",
        "openbookqa",
        "mmlu",
        "truthfulqa_mc1",
        "truthfulqa_mc2",
        "lambada",
    ),
}


def expand_task_names(specs: list[str] | tuple[str, ...]) -> list[str]:
    """Split comma lists and expand suite names, keeping order and dropping repeats."""
    out: list[str] = []
    for spec in specs:
        for name in filter(None, (s.strip() for s in spec.split(","))):
            for n in SUITES.get(name, (name,)):
                if n not in out:
                    out.append(n)
    return out


def get_task(spec: str, data_dir: str | Path | None = None) -> Task:
    """A registered task by name, or ``PATH.jsonl[:scorer]`` for a user task."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if spec in TASKS:
        return TASKS[spec](data_dir)
    path, _, scorer = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    if path.endswith(".jsonl"):
        return UserTask(Path(path), scorer or "exact")
    known = ", ".join(sorted(TASKS) + sorted(SUITES))
    raise TaskError(f"unknown task {spec!r}; known: {known}; or a JSONL file with 'answer' as PATH.jsonl[:scorer]")


__all__ = [
    "SUITES",
    "TASKS",
    "ChoiceItem",
    "ChoiceTask",
    "GenerationTask",
    "LoglikRequest",
    "LoglikResult",
    "Task",
    "TaskError",
    "default_data_dir",
    "expand_task_names",
    "get_task",
]
