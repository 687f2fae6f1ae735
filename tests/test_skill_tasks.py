"""Skill tasks on the real data in ../shared/data: counts as each SOURCE.md states, deterministic disjoint splits,
demonstrations that score full marks; and user JSONL tasks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from selfdistill.data import DataError
from selfdistill.evaluation.tasks import TASKS, TaskError, get_task, ifeval
from selfdistill.evaluation.tasks.base import default_data_dir
from selfdistill.evaluation.tasks.skills import GENERATION_TASKS
from selfdistill.evaluation.tasks.user import UserTask

DATA = default_data_dir()  # $SELFDISTILL_DATA, else ../shared/data beside the checkout
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no data directory at {DATA}")

# name -> (train, test), from each data set's SOURCE.md and the split rules in the class docstrings
COUNTS = {
    "bfcl": (200, 200),  # simple_python 400, halved
    "bfcl_multiple": (0, 200),
    "pubmedqa": (500, 500),  # 500 official test PMIDs
    "sciknoweval_chem": (1600, 500),  # 2,100 4-choice items
    "fictional_knowledge": (650, 650),  # 130 documents x 5 probes of each type
    "fictional_knowledge_mem": (0, 650),
    "fictional_knowledge_hard": (0, 650),
    "gsm8k": (2000, 1319),
    "ifeval": (0, 541),
}


def test_registry_holds_every_skill_task():
    assert set(COUNTS) == set(GENERATION_TASKS)
    assert all(TASKS[name] is cls for name, cls in GENERATION_TASKS.items())
    for cls in GENERATION_TASKS.values():
        assert cls.kind == "generate" and 0 < cls.max_new_tokens <= 512


@needs_data
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_task_loads_with_documented_counts_and_splits(name):
    task = get_task(name, DATA)
    train, test = task.train_examples(), task.test_examples()
    assert (len(train), len(test)) == COUNTS[name]
    again = get_task(name, DATA)
    assert [e.source for e in again.train_examples()] == [e.source for e in train]
    assert [e.source for e in again.test_examples()] == [e.source for e in test]
    ids = [e.source for e in train + test]
    assert all(s.startswith(name.split("_")[0]) for s in ids)
    assert len(set(e.source for e in test)) == len(test)
    if name in ("bfcl", "pubmedqa", "sciknoweval_chem", "gsm8k"):
        assert not set(e.source for e in train) & set(e.source for e in test)
    assert all(e.completion for e in train)
    metric = task.primary_metric
    assert all(task.score(e, e.completion)[metric] == 1.0 for e in train)
    assert next(iter(task.score(test[0], "zzz"))) == metric


@needs_data
def test_sciknoweval_split_keeps_each_question_on_one_side():
    task = get_task("sciknoweval_chem", DATA)

    def question(e):  # the question text without its options, which repeat with other option sets
        return re.search(r"Question: (.*?)\nA\. ", e.question, re.DOTALL).group(1)

    assert not {question(e) for e in task.train_examples()} & {question(e) for e in task.test_examples()}


@needs_data
def test_fictional_knowledge_document_is_teacher_context():
    task = get_task("fictional_knowledge", DATA)
    train, test = task.train_examples(), task.test_examples()
    assert train[0].context and train[0].context not in train[0].question
    assert train[0].context == test[0].context  # the same document backs its memorization and paraphrase probes
    assert task.score(test[0], test[0].answer[1]) == {"acc_lenient": 1.0, "acc_strict": 1.0}


@needs_data
@pytest.mark.parametrize("name", ["bfcl", "bfcl_multiple"])
def test_bfcl_ground_truth_call_scores_in_call_and_json_form(name):
    from selfdistill.evaluation.tasks.bfcl import parse_calls

    task = get_task(name, DATA)
    for e in task.train_examples() + task.test_examples():
        assert task.score(e, e.completion)["acc"] == 1.0, e.source
        call = parse_calls(e.completion)[0]
        as_json = json.dumps({"name": call.name, "arguments": call.args})
        assert task.score(e, as_json)["acc"] == 1.0, (e.source, as_json)


@needs_data
def test_ifeval_checks_every_instruction_in_the_data(monkeypatch):
    task = get_task("ifeval", DATA)
    examples = task.test_examples()
    if ifeval.langdetect is not None:
        total = task.aggregate([task.score(e, "A short reply.") for e in examples])
        assert (total["num_checked"], total["num_unsupported"]) == (834, 0)
    # Without langdetect the 95 language instructions (31 + 25 + 39) are counted, not dropped.
    monkeypatch.setattr(ifeval, "langdetect", None)
    total = task.aggregate([task.score(e, "A short reply.") for e in examples])
    assert (total["num_checked"], total["num_unsupported"]) == (739, 95)


def test_missing_data_dir_is_a_task_error(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        get_task("gsm8k", tmp_path).test_examples()


# ---------------------------------------------------------------------------------------------------------------
# User tasks


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_user_task_reads_rows_and_scores(tmp_path):
    path = write_jsonl(
        tmp_path / "sums.jsonl",
        [
            {"prompt": "2+2?", "answer": 4, "completion": "2+2 = 4. #### 4"},
            {"prompt": "3+5?", "answer": "8"},
        ],
    )
    task = get_task(f"{path}:number")
    assert isinstance(task, UserTask) and task.name == "sums" and task.scorer == "number"
    assert len(task.test_examples()) == 2 and len(task.train_examples()) == 1
    assert task.score(task.test_examples()[1], "It is 8.") == {"acc": 1.0}
    assert task.score(task.test_examples()[0], "It is 5.") == {"acc": 0.0}
    assert get_task(str(path)).scorer == "exact"


def test_user_task_row_without_answer_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "answer": "x"}, {"prompt": "b"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing field 'answer'"):
        UserTask(path, "exact")


def test_user_task_answer_the_scorer_cannot_use(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "answer": "many"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: .*not a number"):
        UserTask(path, "number")


def test_user_task_unknown_scorer_lists_valid_ones(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "answer": "x"}])
    with pytest.raises(TaskError, match="exact, contains, number, choice, json, regex"):
        UserTask(path, "fuzzy")
