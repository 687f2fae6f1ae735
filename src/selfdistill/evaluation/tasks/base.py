"""What a task is: loads its examples, and scores outputs.

Two kinds, both plain classes holding their loaded examples:

- ``GenerationTask``: chat prompts, greedy generation, ``score(example, output) -> {metric: value}``. Training
  splits carry demonstrations (``Example.completion``), so the same task trains SDFT/SFT and is evaluated.
- ``ChoiceTask``: log-likelihood multiple choice on raw text (no chat template), as lm-evaluation-harness does:
  each choice is a ``(context, continuation)`` request; ``score(item, results) -> {metric: value}``.

The first metric a ``score`` returns is the task's headline number (``primary_metric``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from selfdistill.data import Example
from selfdistill.errors import UserError


class TaskError(UserError):
    """A task that cannot be loaded: unknown name, missing data directory or file (user error, exit 2)."""


@dataclass(frozen=True)
class LoglikRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class LoglikResult:
    logprob: float
    """Sum of the continuation tokens' log-probabilities given the context."""
    is_greedy: bool
    """Whether every continuation token is the argmax."""
    num_tokens: int


@dataclass(frozen=True)
class ChoiceItem:
    id: str
    requests: tuple[LoglikRequest, ...]
    """One request per choice."""
    gold: int
    """Index of the correct choice."""
    labels: tuple[int, ...] | None = None
    """Per-choice truth labels where several choices are right (TruthfulQA MC2)."""


class Task:
    name: ClassVar[str]
    kind: ClassVar[Literal["generate", "choice"]]
    primary_metric: ClassVar[str]

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir


class GenerationTask(Task):
    kind = "generate"
    max_new_tokens: ClassVar[int] = 256

    def train_examples(self) -> list[Example]:
        """Examples with demonstrations for training; empty for evaluation-only tasks."""
        return []

    def test_examples(self) -> list[Example]:
        raise NotImplementedError

    has_validation: ClassVar[bool] = False
    """Whether ``validation_examples`` returns a split; callers check this rather than catching the TaskError."""

    def validation_examples(self) -> list[Example]:
        """Held-out examples with demonstrations, disjoint from train and test (for model selection and early
        stopping); a TaskError where the task has none (``has_validation`` is False)."""
        raise TaskError(f"{self.name}: task has no validation split")

    def score(self, example: Example, output: str) -> dict[str, float]:
        raise NotImplementedError


class SplitTask(GenerationTask):
    """A generation task whose data yields both splits at once: subclasses define ``load_splits``, which runs once
    per task object. A subclass with a validation split sets ``has_validation`` and overrides
    ``validation_examples`` (``load_splits`` stays ``(train, test)``)."""

    def load_splits(self) -> tuple[list[Example], list[Example]]:
        """``(train, test)`` examples."""
        raise NotImplementedError

    @cached_property
    def splits(self) -> tuple[list[Example], list[Example]]:
        return self.load_splits()

    def train_examples(self) -> list[Example]:
        return self.splits[0]

    def test_examples(self) -> list[Example]:
        return self.splits[1]


class ChoiceTask(Task):
    kind = "choice"

    def test_items(self) -> list[ChoiceItem]:
        raise NotImplementedError

    def score(self, item: ChoiceItem, results: list[LoglikResult]) -> dict[str, float]:
        raise NotImplementedError


def user_turn(text: str) -> tuple[dict[str, str], ...]:
    """A prompt of one user message, the chat form of every task's examples."""
    return ({"role": "user", "content": text},)


def read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON values of a data file, one per non-blank line; a TaskError naming the file (and line) otherwise."""
    if not path.is_file():
        raise TaskError(f"{path}: file not found")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise TaskError(f"{path}:{n}: not valid JSON ({err})") from None
    return rows


def default_data_dir() -> Path:
    """``$SELFDISTILL_DATA``, else ``../shared/data`` beside the project checkout, else beside the cwd."""
    if env := os.environ.get("SELFDISTILL_DATA"):
        return Path(env)
    beside_checkout = Path(__file__).resolve().parents[4].parent / "shared" / "data"
    if beside_checkout.is_dir():
        return beside_checkout
    return Path.cwd().parent / "shared" / "data"


def task_dir(data_dir: Path, name: str) -> Path:
    path = data_dir / name
    if not path.is_dir():
        raise TaskError(f"{path}: data set {name!r} not found (set --data-dir or SELFDISTILL_DATA)")
    return path
