"""The guard set (what training must not lose) and the selection split (what a run's kept step is chosen on).

    guards = resolve_guards("record_json", keep=["old.jsonl:exact"], limit=24)   # prior_probe, near_record_json, old
    selection = resolve_selection("record_json")                                  # its validation split

Both are resolved before any work, so a missing file or an unscorable one fails in a second, not after a base
evaluation. Every guard splits its items in two disjoint parts: *selection* items, scored during training to decide
what is kept, and *test* items, scored once on the kept model and quoted by the report, so the report shows whether the
budget held on items selection never saw. A task with a validation split (the generated skills) selects on it and
tests on its test split; a task with only a test split (prior_probe, the near-prior tasks, a user file, the choice
tasks) is cut in two halves by a seeded shuffle. Each guard states ``n`` (its selection items) and ``resolution``
(1/n: what one item moves its score), which the budget rule (``continual/budget.py``) uses.

The default guard set is the offline prior suite's quick subset, :data:`DEFAULT_PRIOR` (prior_probe: 38 short
questions the embedded model answers right, 24-token greedy answers; the data-directory suite ``prior`` costs minutes a
task, and a user adds any of it with ``--keep arc_easy`` or ``--keep prior``), plus the near-prior task of a registered
skill being learned, plus in a plan every earlier stage's task, plus ``--keep`` entries. The label-free log-likelihood
guard is ``drift.py``'s and joins with resolution 0.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from selfdistill.data import Example, read_jsonl
from selfdistill.errors import UserError
from selfdistill.evaluation.tasks import TASKS, Task, expand_task_names, get_task
from selfdistill.evaluation.tasks.base import ChoiceItem, ChoiceTask, GenerationTask, TaskError
from selfdistill.evaluation.tasks.prior import NEAR_TASKS
from selfdistill.evaluation.tasks.scorers import SCORERS, check_answer
from selfdistill.evaluation.tasks.user import UserTask

DEFAULT_PRIOR: tuple[str, ...] = ("prior_probe",)
"""The prior suite's quick subset: guards every run gets (offline, no data directory, seconds to score)."""
GUARD_SEED = 0
"""Seed of the halving of test-only guards; fixed, so every run and every seed of a plan scores the same items."""
HOLDOUT_FRACTION, HOLDOUT_MIN, HOLDOUT_MAX = 0.1, 8, 64
"""A user data file's selection hold-out: 10% of its training rows, at least 8 and at most 64."""

Item = Example | ChoiceItem
Origin = Literal["prior", "near", "stage", "keep"]


class GuardError(UserError):
    """A guard or selection split that cannot be used; the message is one line naming the option or file."""


@dataclass(frozen=True)
class Guard:
    """One guard task, its items cut into a selection part and a test part that share no prompt."""

    name: str
    """Column name (the task's name; a user file's stem)."""
    origin: Origin
    """Why it guards: the prior suite, the learned skill's near-prior task, an earlier plan stage, or ``--keep``."""
    task: Task
    """The task object: its scorer and generation budget."""
    selection_items: tuple[Item, ...]
    """Scored at every evaluation point during training."""
    test_items: tuple[Item, ...]
    """Scored once on the kept model: what the report quotes."""

    @property
    def n(self) -> int:
        """Items scored at each evaluation point."""
        return len(self.selection_items)

    @property
    def resolution(self) -> float:
        """What one selection item is worth, 1/n: the smallest drop the guard can show."""
        return 1.0 / self.n

    def selection_task(self) -> Task:
        """The task scored on its selection items only (``evaluate_tasks(model, tok, [guard.selection_task()])``)."""
        return _scored_on(self.task, self.selection_items)

    def test_task(self) -> Task:
        """The task scored on its test items only."""
        return _scored_on(self.task, self.test_items)


@dataclass(frozen=True)
class Selection:
    """The split the learned task is scored on during training, and the training rows left after it."""

    task: GenerationTask
    """Scored through ``evaluate_tasks``: its ``test_examples()`` are the selection items."""
    source: str
    """Where the items came from, for logs and results (``validation split of record_json``, a hold-out, a file)."""
    train: tuple[Example, ...] | None = None
    """The training rows left after a hold-out; None where the training data is unchanged."""

    @property
    def n(self) -> int:
        """Selection items."""
        return len(self.task.test_examples())

    @property
    def resolution(self) -> float:
        """What one selection item is worth, 1/n."""
        return 1.0 / self.n


# ---------------------------------------------------------------------------------------------------------- items
def _scored_on(task: Task, items: Sequence[Item]) -> Task:
    """A shallow copy of ``task`` whose test items are ``items`` (an instance attribute shadows the method)."""
    clone = copy.copy(task)
    frozen = list(items)
    if isinstance(task, ChoiceTask):
        clone.test_items = lambda: list(frozen)
    else:
        clone.test_examples = lambda: list(frozen)
    return clone


def item_key(item: Item) -> str:
    """What makes two items the same question: the prompt (and privileged context), or a choice item's contexts."""
    if isinstance(item, ChoiceItem):
        return json.dumps([[r.context, r.continuation] for r in item.requests])
    return json.dumps([list(m.items()) for m in item.messages] + [item.context])


def check_disjoint(selection: Sequence[Item], test: Sequence[Item], where: str, test_name: str) -> None:
    """A one-line GuardError naming ``where`` when a selection item is also a test item of ``test_name``."""
    quoted = {item_key(item) for item in test}
    shared = [item for item in selection if item_key(item) in quoted]
    if shared:
        first = shared[0].question if isinstance(shared[0], Example) else shared[0].id
        raise GuardError(
            f"{where}: {len(shared)} of its {len(selection)} items are test items of {test_name} (first: {first!r}); "
            "selection must not overlap the items the report quotes"
        )


def subset(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """At most ``limit`` items, in order: the seeded subset ``evaluate.subset_indices`` draws for ``--limit``."""
    if not limit or limit >= len(items):
        return list(items)
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), limit))]


def _halves(items: Sequence[Item], name: str) -> tuple[list[Item], list[Item]]:
    """A shuffle seeded by the guard's name cut in two, each half in file order; selection gets the smaller half."""
    order = list(range(len(items)))
    random.Random(f"{GUARD_SEED}:{name}").shuffle(order)
    half = len(order) // 2
    return [items[i] for i in sorted(order[:half])], [items[i] for i in sorted(order[half:])]


def _test_items(task: Task) -> list[Item]:
    return task.test_items() if isinstance(task, ChoiceTask) else task.test_examples()


def _guard(name: str, origin: Origin, task: Task, limit: int | None) -> Guard:
    if getattr(task, "has_validation", False):
        selection, test = task.validation_examples(), task.test_examples()
    else:
        selection, test = _halves(_test_items(task), name)
    selection, test = subset(selection, limit, GUARD_SEED), subset(test, limit, GUARD_SEED)
    if not selection or not test:
        raise GuardError(f"guard {name}: {len(_test_items(task))} item(s) cannot be split into selection and test")
    check_disjoint(selection, test, f"guard {name}", f"guard {name}")
    return Guard(name, origin, task, tuple(selection), tuple(test))


# ------------------------------------------------------------------------------------------------------ user files
class _ReferenceTask(UserTask):
    """A user file scored against each row's ``answer``, or its ``completion`` where it has none (a named scorer)."""

    def __init__(self, path: Path, scorer: str, examples: list[Example]):
        GenerationTask.__init__(self, path.parent)
        self.path, self.name, self.scorer = path, path.stem, scorer
        self.examples = [ex if ex.answer is not None else replace(ex, answer=ex.completion) for ex in examples]


def user_file_task(spec: str, option: str) -> UserTask:
    """``FILE.jsonl[:scorer]`` as a task; one-line GuardErrors naming ``option`` for a missing or unscorable file.

    Rows are scored against ``answer``; with a scorer named explicitly, a row without ``answer`` is scored against its
    ``completion`` (so a past training file can guard the skill it taught: ``--keep old.jsonl:exact``).
    """
    path, scorer = _file_spec(spec)
    if not path.is_file():
        raise GuardError(f"{option} {spec}: file not found")
    if scorer and scorer not in SCORERS:
        raise GuardError(f"{option} {spec}: unknown scorer {scorer!r}; valid scorers: {', '.join(SCORERS)}")
    try:
        examples = read_jsonl(path, require_completion=False)
    except UserError as err:
        raise GuardError(f"{option} {spec}: {err}") from None
    for ex in examples:
        reference = ex.answer if ex.answer is not None or not scorer else ex.completion
        if reference is None:
            how = "name a scorer (FILE.jsonl:exact) to score against 'completion'" if not scorer else "add 'answer'"
            raise GuardError(f"{option} {spec}: {ex.source}: no 'answer' to score against; {how}")
        if problem := check_answer(scorer or "exact", reference):
            raise GuardError(f"{option} {spec}: {ex.source}: {problem}")
    return _ReferenceTask(path, scorer or "exact", examples)


def _file_spec(spec: str) -> tuple[Path, str]:
    """``FILE.jsonl[:scorer]`` as (path, scorer or ""); a path that exists as written has no scorer part."""
    path, _, scorer = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    return Path(path), scorer


def _is_file_spec(spec: str) -> bool:
    return spec.partition(":")[0].endswith(".jsonl") or Path(spec).suffix == ".jsonl"


def _registered(spec: str, data_dir: Path | None, option: str) -> Task:
    try:
        task = get_task(spec, data_dir)
        _test_items(task)  # load now: a missing data set fails before any work
    except TaskError as err:
        raise GuardError(f"{option} {spec}: {err}") from None
    return task


# ------------------------------------------------------------------------------------------------------- resolving
def near_tasks_of(skill: str) -> list[str]:
    """The near-prior tasks of a registered skill (its own prompt surface, another question)."""
    return [name for name, cls in NEAR_TASKS.items() if cls.skill == skill]


def resolve_guards(
    learning: str | None,
    *,
    keep: Sequence[str] = (),
    earlier: Sequence[str] = (),
    prior: Sequence[str] = DEFAULT_PRIOR,
    limit: int | None = None,
    data_dir: Path | None = None,
) -> list[Guard]:
    """The guard set of a run learning ``learning`` (a registered task name, or None for user data).

    ``prior``: the prior suite's quick subset; near-prior tasks of ``learning``; ``earlier``: a plan's earlier stages'
    test tasks (names or ``FILE.jsonl[:scorer]``); ``keep``: ``--keep`` entries (a task, a suite such as ``prior``,
    or ``FILE.jsonl[:scorer]``). ``limit`` caps each guard's selection and test items. A name named twice guards once,
    under its first origin. Raises a one-line GuardError naming the option for anything that cannot be scored.
    """
    entries: list[tuple[str, Origin, str]] = [(spec, "prior", "prior") for spec in prior]
    entries += [(name, "near", "near") for name in (near_tasks_of(learning) if learning else [])]
    entries += [(spec, "stage", "stages") for spec in earlier]
    entries += [(spec, "keep", "--keep") for spec in keep]
    guards: dict[str, Guard] = {}
    for spec, origin, option in entries:
        if _is_file_spec(spec):
            tasks = [user_file_task(spec, option)]
        else:
            tasks = [_registered(name, data_dir, option) for name in expand_task_names([spec])]
        for task in tasks:
            if task.name == learning:
                raise GuardError(f"{option} {spec}: {learning} is the task being learned; it cannot also be a guard")
            if task.name not in guards:
                guards[task.name] = _guard(task.name, origin, task, limit)
    return list(guards.values())


def resolve_selection(
    data: str,
    *,
    selection: str | None = None,
    test: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    data_dir: Path | None = None,
) -> Selection:
    """The selection split of the task learned from ``data`` (a registered task name, or a training JSONL).

    ``selection`` (``--selection FILE[:scorer]``) wins; else a registered task's validation split; else a seeded
    hold-out of the training rows (:data:`HOLDOUT_FRACTION`, seeded by ``seed``), returned with the rows left to train
    on. ``test`` names the test items of user data (a plan stage's ``test``). ``limit`` caps the items scored. A
    selection item that is also a test item is refused with one line naming the option.
    """
    task = _registered(data, data_dir, "--data") if data in TASKS else None
    quoted = task if task is not None else (user_file_task(test, "--test") if test else None)
    train: tuple[Example, ...] | None = None
    if selection is not None:
        scored, source = _selection_file(selection, task), f"--selection {selection}"
    elif task is not None and getattr(task, "has_validation", False):
        scored, source = _scored_on(task, task.validation_examples()), f"validation split of {data}"
    else:
        scored, source, train = _holdout_selection(data, task, quoted, seed)
    if quoted is not None:
        check_disjoint(scored.test_examples(), quoted.test_examples(), source, quoted.name)
    return Selection(_scored_on(scored, subset(scored.test_examples(), limit, seed)), source, train)


def _selection_file(spec: str, task: Task | None) -> GenerationTask:
    """``--selection FILE[:scorer]``; for a registered task without a named scorer, scored by the task's own scorer."""
    chosen = user_file_task(spec, "--selection")
    if task is None or _file_spec(spec)[1]:
        return chosen
    return _scored_on(task, chosen.test_examples())


def _holdout_selection(
    data: str, task: Task | None, quoted: Task | None, seed: int
) -> tuple[GenerationTask, str, tuple[Example, ...]]:
    """A seeded hold-out of the training rows, scored against ``answer`` (else the demonstration) by the task's
    scorer, or the user test file's; ``(task, source, rows left to train on)``."""
    rows = task.train_examples() if task is not None else _training_rows(data)
    held, kept = _holdout(rows, data, seed)
    held = [ex if ex.answer is not None else replace(ex, answer=ex.completion) for ex in held]
    source = f"hold-out of {len(held)} of {len(rows)} training rows of {data} (seed {seed})"
    if task is not None:
        return _scored_on(task, held), source, tuple(kept)
    scorer = quoted.scorer if isinstance(quoted, UserTask) else "exact"
    for ex in held:
        if problem := check_answer(scorer, ex.answer):
            raise GuardError(f"--data {data}: {ex.source}: {problem} (scoring the selection hold-out)")
    return _ReferenceTask(Path(data), scorer, held), source, tuple(kept)


def _training_rows(data: str) -> list[Example]:
    try:
        return read_jsonl(data)
    except UserError as err:
        raise GuardError(f"--data {data}: {err}") from None


def _holdout(rows: Sequence[Example], data: str, seed: int) -> tuple[list[Example], list[Example]]:
    """``(held out, kept for training)``: a seeded sample of :data:`HOLDOUT_FRACTION` of the rows, in file order."""
    size = min(HOLDOUT_MAX, max(HOLDOUT_MIN, round(HOLDOUT_FRACTION * len(rows))))
    if len(rows) < 2 * size:
        raise GuardError(
            f"--data {data}: {len(rows)} rows are too few to hold out {size} for selection and still train; "
            "pass --selection FILE"
        )
    chosen = set(random.Random(seed).sample(range(len(rows)), size))
    return [r for i, r in enumerate(rows) if i in chosen], [r for i, r in enumerate(rows) if i not in chosen]
