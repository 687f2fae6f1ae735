"""Filtered self-rewrites for seqkd (``--seqkd-filter``): whether a teacher generation for a training row is right.

    accept = make_acceptor(cfg.data, examples, cfg.data_dir); keep = [accept(i, text) for i, text in rows]

The scorer is chosen once, from where the examples came from (the same order as ``load_training_examples``):

- ``--data`` is a registered generation task (and not an existing path): that task's own ``score``, as
  ``selfdistill eval`` runs it on the row's reference, so extraction and normalisation are the evaluation's. A
  generation is kept when the task's headline metric (``primary_metric``) gives full credit.
- otherwise every row carries an ``answer``: one scorer from ``tasks/scorers.py`` for the whole data set, picked
  from the kind of answers (:func:`answer_scorer`), so it equals ``selfdistill eval --tasks DATA.jsonl:<scorer>``.
- otherwise there is nothing to score against: a ConfigError naming the data (or the row lacking an ``answer``).

No model runs: scoring is regular expressions and JSON parsing on the decoded text, deterministic.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfdistill.config import ConfigError
from selfdistill.data import Example, is_hub_name
from selfdistill.evaluation.tasks import TASKS, get_task
from selfdistill.evaluation.tasks.base import GenerationTask
from selfdistill.evaluation.tasks.scorers import SCORERS, check_answer, parse_number

log = logging.getLogger(__name__)

_LETTER = re.compile(r"\s*\(?[A-Za-z]\)?\s*")  # a choice letter as ``choice_letter`` reads one: "B", "(b)"


class Acceptor:
    """``accept(index, completion) -> bool``: whether a generation for ``examples[index]`` passes the data's scorer.

    Holds the examples it scores against; ``how`` names the scorer for the run's log line.
    """

    def __init__(self, examples: Sequence[Example], score: Callable[[Example, str], bool], how: str):
        self.examples = examples
        self.score = score
        self.how = how

    def __call__(self, index: int, completion: str) -> bool:
        return self.score(self.examples[index], completion)


def make_acceptor(data_spec: str, examples: Sequence[Example], data_dir: str | Path | None = None) -> Acceptor:
    """The acceptor for training data ``data_spec`` (``--data``) whose loaded rows are ``examples``.

    Raises ConfigError when the data gives no way to score a completion. Logs a warning when the scorer rejects
    some rows' own demonstrations (their rewrites would mostly be dropped too).
    """
    acceptor = _task_acceptor(data_spec, examples, data_dir) or _answer_acceptor(data_spec, examples)
    _warn_on_rejected_demos(data_spec, acceptor)
    return acceptor


def _task_acceptor(data_spec: str, examples: Sequence[Example], data_dir: str | Path | None) -> Acceptor | None:
    """The registered task's own scorer, or None when ``data_spec`` is data on disk or the hub, or not a generation
    task with a scorer. A path that exists wins over a task name, as it does when the examples are loaded."""
    if Path(data_spec).exists() or is_hub_name(data_spec) or data_spec not in TASKS:
        return None
    cls = TASKS[data_spec]
    if not issubclass(cls, GenerationTask) or cls.score is GenerationTask.score:
        return None
    task = get_task(data_spec, data_dir)  # only constructs: scoring reads the example, not the data directory
    metric = task.primary_metric

    def score(example: Example, completion: str) -> bool:
        return task.score(example, completion).get(metric, 0.0) >= 1.0

    return Acceptor(examples, score, f"task {data_spec}'s scorer (full {metric!r})")


def _answer_acceptor(data_spec: str, examples: Sequence[Example]) -> Acceptor:
    """Score each row's ``answer`` with one named scorer; every row must have one."""
    having = next((ex for ex in examples if ex.answer is not None), None)
    if having is None:
        raise ConfigError(
            f"seqkd_filter: {data_spec}: no way to score completions (not a registered task with a scorer, and "
            "rows have no 'answer' field)"
        )
    missing = next((ex for ex in examples if ex.answer is None), None)
    if missing is not None:
        raise ConfigError(
            f"seqkd_filter: {missing.source or data_spec}: row has no 'answer' field, but "
            f"{having.source or 'another row'} has one; give every row an 'answer' to filter by it"
        )
    name = answer_scorer(examples)
    for ex in examples:
        if problem := check_answer(name, ex.answer):
            raise ConfigError(f"seqkd_filter: {ex.source or data_spec}: {problem}")
    scorer = SCORERS[name]

    def score(example: Example, completion: str) -> bool:
        return scorer(completion, example.answer) >= 1.0

    return Acceptor(examples, score, f"the rows' 'answer' by scorer {name!r}")


def _kind(answer: Any) -> str:
    """``number``, ``choice``, ``json`` or ``text``: what one row's answer (or list of alternatives) is."""
    alternatives = list(answer) if isinstance(answer, list | tuple) else [answer]
    if any(isinstance(a, dict | list) for a in alternatives):
        return "json"
    kinds = {_scalar_kind(a) for a in alternatives}
    return kinds.pop() if len(kinds) == 1 else "text"


def _scalar_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "text"
    if isinstance(value, int | float):
        return "number"
    number = parse_number(value)
    if number is not None and math.isfinite(number):  # "nan" and "inf" parse as floats but are words here
        return "number"
    return "choice" if isinstance(value, str) and _LETTER.fullmatch(value) else "text"


def answer_scorer(examples: Sequence[Example]) -> str:
    """The name of the scorer (``SCORERS``) for a data set's answers: one for all rows, from what they are.

    - every answer a number (``5``, ``"1,250"``): ``number``, the completion's final number (after the last
      ``####``, else after "answer is"/"answer:", else the last number). Numeric answers come with worked
      solutions, whose final number is the answer, as GSM8K reads them; a whole-text match would drop them all.
    - every answer a single letter (``"B"``): ``choice``, the letter the completion picks ("The answer is (B)").
    - every answer a JSON object: ``json``, the first JSON value in the completion (fenced or bare) equals it, as
      ``record_json`` and ``extract_trip`` compare records.
    - otherwise (text): ``exact`` (case, whitespace, quotes and final punctuation ignored) when every row's
      demonstration is its answer in that sense (short-answer data, whose rewrites are short answers too), else
      ``contains`` (the answer occurs in the completion), for demonstrations that put the answer in a sentence.
    """
    kinds = {_kind(ex.answer) for ex in examples}
    if len(kinds) == 1 and (kind := kinds.pop()) != "text":
        return kind
    exact = SCORERS["exact"]
    demos_exact = all(ex.completion is not None and exact(ex.completion, ex.answer) >= 1.0 for ex in examples)
    return "exact" if demos_exact else "contains"


def _warn_on_rejected_demos(data_spec: str, acceptor: Acceptor) -> None:
    rejected = [ex for ex in acceptor.examples if ex.completion is not None and not acceptor.score(ex, ex.completion)]
    if rejected:
        log.warning(
            "seqkd_filter: %s: %s rejects %d of %d demonstrations (first: %s); rewrites of those rows will mostly "
            "be dropped",
            data_spec,
            acceptor.how,
            len(rejected),
            len(acceptor.examples),
            rejected[0].source or "?",
        )
