"""Multiple-choice tasks: loading the real data sets, lm-eval formatting, and scoring on hand-made results."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from selfdistill.evaluation.evaluate import aggregate
from selfdistill.evaluation.tasks.base import ChoiceItem, LoglikRequest, LoglikResult, TaskError
from selfdistill.evaluation.tasks.choice import CHOICE_TASKS, TRUTHFULQA_PRIMER

# name -> (items, choices per item) as each SOURCE.md states; None = varies.
EXPECTED = {
    "hellaswag": (2000, 4),
    "arc_easy": (2376, 4),
    "arc_challenge": (1172, 4),
    "piqa": (1838, 2),
    "winogrande": (1267, 2),
    "boolq": (2000, 2),
    "openbookqa": (500, 4),
    "mmlu": (1995, 4),
    "truthfulqa_mc1": (817, None),
    "truthfulqa_mc2": (817, None),
    "lambada": (2000, 1),
}


def _items(name: str, data_dir: Path) -> list[ChoiceItem]:
    return CHOICE_TASKS[name](data_dir).test_items()


def test_registry_covers_the_prior_suite() -> None:
    assert set(CHOICE_TASKS) == set(EXPECTED)
    for name, cls in CHOICE_TASKS.items():
        assert cls.name == name and cls.kind == "choice"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_loads_well_formed_items(name: str, data_dir: Path) -> None:
    n, n_choices = EXPECTED[name]
    items = _items(name, data_dir)
    assert len(items) == n
    assert len({item.id for item in items}) == n, "ids must be unique"
    for item in items:
        assert n_choices is None or len(item.requests) == n_choices
        assert 0 <= item.gold < len(item.requests)
        assert all(req.context and req.continuation.startswith(" ") for req in item.requests)
        if name == "truthfulqa_mc2":
            assert item.labels is not None and item.labels[item.gold] == 1 and 0 in item.labels
    task = CHOICE_TASKS[name](data_dir)
    assert [i.id for i in task.test_items()] == [i.id for i in items]  # stable across loads


def test_lm_eval_prompt_formats(data_dir: Path) -> None:
    arc = _items("arc_easy", data_dir)[0].requests[0]
    assert arc.context.startswith("Question: ") and arc.context.endswith("?\nAnswer:")
    piqa = _items("piqa", data_dir)[0].requests[0]
    assert piqa.context.startswith("Question: ") and piqa.context.endswith("\nAnswer:")
    boolq = _items("boolq", data_dir)[0]
    assert not boolq.requests[0].context.startswith("Passage:") and boolq.requests[0].context.endswith("?\nAnswer:")
    assert [r.continuation for r in boolq.requests] == [" no", " yes"]
    mmlu = _items("mmlu", data_dir)[0]
    assert mmlu.id == "abstract_algebra/5"
    assert mmlu.requests[0].context.startswith(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    )
    assert "\nA. " in mmlu.requests[0].context and mmlu.requests[0].context.endswith("\nD. False, True\nAnswer:")
    assert [r.continuation for r in mmlu.requests] == [" A", " B", " C", " D"]
    tqa = _items("truthfulqa_mc1", data_dir)[0].requests[0]
    assert tqa.context == TRUTHFULQA_PRIMER + "\n\nQ: What happens if you eat a pomegranate?\nA:"
    # Hellaswag: lm-eval capitalizes ctx_b, the unfinished last sentence.
    hs = _items("hellaswag", data_dir)[0]
    assert hs.requests[0].context.endswith("grabs the pole. The lady") and hs.id == "1"
    # Winogrande partial scoring: the choice is in the context, the continuation is shared.
    wg = _items("winogrande", data_dir)[0].requests
    assert (
        wg[0].context != wg[1].context and wg[0].continuation == wg[1].continuation == " always got the easier cases."
    )
    lam = _items("lambada", data_dir)[0].requests
    assert lam == (LoglikRequest(lam[0].context, " signs"),)


def test_missing_data_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=re.escape(str(tmp_path / "arc_easy"))):
        CHOICE_TASKS["arc_easy"](tmp_path).test_items()
    (tmp_path / "arc_easy").mkdir()
    with pytest.raises(TaskError, match=r"arc_easy\.jsonl: file not found"):
        CHOICE_TASKS["arc_easy"](tmp_path).test_items()
    (tmp_path / "arc_easy" / "arc_easy.jsonl").write_text(
        '{"query": "Question: q", "choices": ["a"], "gold": 0}\n{oops\n'
    )
    with pytest.raises(TaskError, match=r"arc_easy\.jsonl:2: not valid JSON"):
        CHOICE_TASKS["arc_easy"](tmp_path).test_items()
    (tmp_path / "mmlu").mkdir()
    with pytest.raises(TaskError, match="test_subset_1995.tsv"):
        CHOICE_TASKS["mmlu"](tmp_path).test_items()


def _result(logprob: float, greedy: bool = False) -> LoglikResult:
    return LoglikResult(logprob=logprob, is_greedy=greedy, num_tokens=1)


def test_acc_and_acc_norm_differ_when_lengths_differ(tmp_path: Path) -> None:
    item = ChoiceItem(id="x", requests=(LoglikRequest("Q:", " a"), LoglikRequest("Q:", " bbbbbbbbbb")), gold=1)
    # acc: -2 > -5 picks choice 0; acc_norm: -2/1 < -5/10 picks choice 1 (lengths exclude the leading space).
    scores = CHOICE_TASKS["arc_easy"](tmp_path).score(item, [_result(-2.0), _result(-5.0)])
    assert scores == {"acc_norm": 1.0, "acc": 0.0}
    assert next(iter(scores)) == CHOICE_TASKS["arc_easy"].primary_metric
    scores = CHOICE_TASKS["arc_easy"](tmp_path).score(item, [_result(-2.0), _result(-2.1)])
    assert scores == {"acc_norm": 1.0, "acc": 0.0}
    assert CHOICE_TASKS["boolq"](tmp_path).score(item, [_result(-3.0), _result(-1.0)]) == {"acc": 1.0}
    assert CHOICE_TASKS["winogrande"](tmp_path).score(item, [_result(-1.0), _result(-1.0)]) == {"acc": 0.0}  # tie


def test_truthfulqa_mc2_is_normalized_true_mass(tmp_path: Path) -> None:
    reqs = tuple(LoglikRequest("Q: q\nA:", f" answer {k}") for k in range(3))
    item = ChoiceItem(id="0", requests=reqs, gold=0, labels=(1, 0, 1))
    task = CHOICE_TASKS["truthfulqa_mc2"](tmp_path)
    got = task.score(item, [_result(math.log(0.5)), _result(math.log(0.2)), _result(math.log(0.3))])
    assert got["acc"] == pytest.approx(0.8)
    # Very negative log-probs (long answers) must not underflow to 0/0.
    got = task.score(item, [_result(-1000.0), _result(-1001.0), _result(-3000.0)])
    assert got["acc"] == pytest.approx(1 / (1 + math.exp(-1)))
    mc1 = CHOICE_TASKS["truthfulqa_mc1"](tmp_path)
    assert mc1.score(item, [_result(-1.0), _result(-0.5), _result(-3.0)]) == {"acc": 0.0}


def test_lambada_acc_is_greedy_and_perplexity(tmp_path: Path) -> None:
    task = CHOICE_TASKS["lambada"](tmp_path)
    item = ChoiceItem(id="0", requests=(LoglikRequest("the cat sat on the", " mat"),), gold=0)
    a = task.score(item, [_result(-1.0, greedy=True)])
    b = task.score(item, [_result(-3.0, greedy=False)])
    assert a == {"acc": 1.0, "logprob": -1.0} and b["acc"] == 0.0
    metrics, stderr = aggregate([a, b])
    assert metrics["acc"] == 0.5 and metrics["perplexity"] == pytest.approx(math.exp(2.0))
    assert stderr["acc"] == pytest.approx(math.sqrt(0.5 / 2))  # sample var 0.5, n 2
