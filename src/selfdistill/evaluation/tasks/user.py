"""A user's own task: any JSONL with ``prompt`` and ``answer`` (``completion`` optional), scored by a named scorer.

    task = UserTask(Path("my_eval.jsonl"), "number")   # selfdistill eval --tasks my_eval.jsonl:number

Rows with a demonstration (``completion``) are also its training examples. Every row is checked when the task is
built: a row without ``answer``, or with an answer the scorer cannot use, is reported as ``file:line: ...``.
"""

from __future__ import annotations

from pathlib import Path

from selfdistill.data import DataError, Example, read_jsonl
from selfdistill.evaluation.tasks.base import GenerationTask, TaskError
from selfdistill.evaluation.tasks.scorers import SCORERS, check_answer


class UserTask(GenerationTask):
    """All rows are test examples; rows with a completion are training examples too. Metric ``acc``."""

    primary_metric = "acc"

    def __init__(self, path: Path, scorer: str = "exact"):
        path = Path(path)
        if scorer not in SCORERS:
            raise TaskError(f"{path}: unknown scorer {scorer!r}; valid scorers: {', '.join(SCORERS)}")
        super().__init__(path.parent)
        self.path = path
        self.name = path.stem  # a per-file name, not a class constant: each file is its own task
        self.scorer = scorer
        self.examples = read_jsonl(path, require_completion=False)
        for ex in self.examples:
            if ex.answer is None:
                raise DataError(f"{ex.source}: missing field 'answer' (needed to score with {scorer!r})")
            if problem := check_answer(scorer, ex.answer):
                raise DataError(f"{ex.source}: {problem}")

    def train_examples(self) -> list[Example]:
        return [ex for ex in self.examples if ex.completion is not None]

    def test_examples(self) -> list[Example]:
        return list(self.examples)

    def score(self, example: Example, output: str) -> dict[str, float]:
        return {"acc": SCORERS[self.scorer](output, example.answer)}
