"""seqkd's filter: a registered task's own scorer, or the rows' answers, accepts the demonstrations and rejects
wrong generations; data that cannot be scored is a ConfigError naming the data or the row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfdistill.config import ConfigError
from selfdistill.data import read_examples
from selfdistill.evaluation.tasks import get_task
from selfdistill.evaluation.tasks.procedural import SKILL_TASKS
from selfdistill.training.filtering import answer_scorer, make_acceptor

WRONG = "I am not sure, sorry."


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("name", sorted(SKILL_TASKS))
def test_skill_task_accepts_every_demonstration_and_rejects_a_wrong_one(name):
    examples = get_task(name).train_examples()
    accept = make_acceptor(name, examples)
    assert "scorer" in accept.how and name in accept.how
    assert all(accept(i, ex.completion) for i, ex in enumerate(examples))
    assert not any(accept(i, WRONG) for i in range(len(examples)))
    # another row's demonstration is wrong for this row (the skills' rows differ in their answers)
    assert not accept(0, next(ex.completion for ex in examples if ex.answer != examples[0].answer))


def test_skill_scorers_extract_as_evaluation_does():
    record = make_acceptor("record_json", examples := get_task("record_json").train_examples())
    value = json.loads(examples[0].completion)
    reordered = json.dumps(dict(reversed(value.items())), indent=2)
    assert record(0, f"```json\n{reordered}\n```")  # fenced, keys in another order
    assert not record(0, json.dumps(value | {"age": value["age"] + 1}))

    arith = make_acceptor("arith_steps", examples := get_task("arith_steps").train_examples())
    *steps, last = examples[0].completion.splitlines()
    gold = int(last.removeprefix("Answer: "))
    assert arith(0, "Let me see.\n\nAnswer: " + str(gold) + "\n")  # only the last line counts
    assert not arith(0, "\n".join([*steps, f"Answer: {gold + 1}"]))

    ticket = make_acceptor("ticket_line", examples := get_task("ticket_line").train_examples())
    assert ticket(0, f"`{examples[0].completion}`")
    assert not ticket(0, examples[0].completion.replace("#", "No. "))


def test_gsm8k_uses_its_final_number(data_dir):
    examples = get_task("gsm8k", data_dir).train_examples()
    accept = make_acceptor("gsm8k", examples, data_dir)
    assert all(accept(i, ex.completion) for i, ex in enumerate(examples))
    gold = examples[0].answer
    assert accept(0, f"So the total is {gold:g} dollars.")
    assert not accept(0, f"#### {gold + 1:g}")
    assert not accept(0, WRONG)


@pytest.mark.parametrize("name", ["pubmedqa", "bfcl"])
def test_data_tasks_accept_their_demonstrations(name, data_dir):
    examples = get_task(name, data_dir).train_examples()
    accept = make_acceptor(name, examples, data_dir)
    assert all(accept(i, ex.completion) for i, ex in enumerate(examples))
    assert not any(accept(i, WRONG) for i in range(len(examples)))


def test_numeric_answers_score_the_final_number(tmp_path):
    path = _write(
        tmp_path / "math.jsonl",
        [
            {"prompt": "What is 2+3?", "completion": "2+3 = 5. The answer is 5.", "answer": 5},
            {"prompt": "What is 1,000 + 250?", "completion": "1000 + 250 = 1250\n#### 1,250", "answer": "1,250"},
        ],
    )
    examples = read_examples(path)
    accept = make_acceptor(str(path), examples)
    assert answer_scorer(examples) == "number" and "'number'" in accept.how
    assert accept(0, "2 plus 3 makes 5.") and accept(1, "It is $1,250.")
    assert not accept(0, "2+3 = 6. The answer is 6.") and not accept(1, "#### 1,200")


def test_text_answers_exact_when_demos_are_the_answer_else_contained(tmp_path):
    short = read_examples(
        _write(
            tmp_path / "short.jsonl",
            [
                {"prompt": "Capital of Italy?", "completion": "Rome", "answer": "Rome"},
                {"prompt": "Capital of Peru?", "completion": "Lima.", "answer": ["Lima", "Lima, Peru"]},
            ],
        )
    )
    accept = make_acceptor("short.jsonl", short)
    assert answer_scorer(short) == "exact"
    assert accept(0, " rome ") and accept(1, "Lima, Peru")
    assert not accept(0, "Rome, or maybe Milan") and not accept(1, "Quito")

    sentences = read_examples(
        _write(
            tmp_path / "sentences.jsonl",
            [
                {"prompt": "Capital of Italy?", "completion": "The capital of Italy is Rome.", "answer": "Rome"},
                {"prompt": "Capital of Peru?", "completion": "Lima", "answer": "Lima"},
            ],
        )
    )
    accept = make_acceptor("sentences.jsonl", sentences)
    assert answer_scorer(sentences) == "contains"
    assert accept(0, "It is Rome, of course.") and not accept(0, "It is Milan.")


def test_letter_and_json_answers(tmp_path):
    letters = read_examples(
        _write(
            tmp_path / "mc.jsonl",
            [
                {"prompt": "Pick one: A. cat B. dog", "completion": "B", "answer": "B"},
                {"prompt": "Pick one: A. red B. blue", "completion": "The answer is (A).", "answer": "a"},
            ],
        )
    )
    accept = make_acceptor("mc.jsonl", letters)
    assert answer_scorer(letters) == "choice"
    assert accept(0, "The answer is B.") and accept(1, "A") and not accept(0, "A. cat")

    records = read_examples(
        _write(
            tmp_path / "rec.jsonl",
            [
                {
                    "prompt": "Ava is 34.",
                    "completion": '{"name": "Ava", "age": 34}',
                    "answer": {"name": "Ava", "age": 34},
                },
            ],
        )
    )
    accept = make_acceptor("rec.jsonl", records)
    assert answer_scorer(records) == "json"
    assert accept(0, 'Here it is: {"age": 34, "name": "Ava"}') and not accept(0, '{"name": "Ava", "age": 35}')


def test_no_way_to_score_names_the_data(small_jsonl):
    with pytest.raises(ConfigError, match=r"seqkd_filter: .*small\.jsonl: no way to score completions") as err:
        make_acceptor(str(small_jsonl), read_examples(small_jsonl))
    assert len(str(err.value).splitlines()) == 1


def test_rows_with_and_without_answer_name_the_row(tmp_path):
    path = _write(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "What is 2+3?", "completion": "5", "answer": 5},
            {"prompt": "What is 2+4?", "completion": "6", "answer": 6},
            {"prompt": "What is 2+5?", "completion": "7"},
        ],
    )
    with pytest.raises(ConfigError, match=r"mixed\.jsonl:3: row has no 'answer' field, but .*mixed\.jsonl:1 has"):
        make_acceptor(str(path), read_examples(path))


def test_answer_a_scorer_cannot_use_names_the_row(tmp_path):
    path = _write(
        tmp_path / "odd.jsonl",
        [
            {"prompt": "Ava is 34.", "completion": "Ava", "answer": "Ava"},
            {"prompt": "Liam is 40.", "completion": "{}", "answer": {"name": "Liam"}},
        ],
    )
    with pytest.raises(ConfigError, match=r"odd\.jsonl:2: 'answer' must be a string"):
        make_acceptor(str(path), read_examples(path))


def test_an_existing_path_wins_over_a_task_name(tmp_path, monkeypatch):
    """As when loading: a file named like a task is the file, scored by its answers, not by the task."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "shipping_zone", [{"prompt": "Parcel 1 to Peru?", "completion": "Zone 9", "answer": 9}])
    accept = make_acceptor("shipping_zone", read_examples("shipping_zone"))
    assert "'number'" in accept.how and accept(0, "zone 9")


def test_warns_when_the_scorer_rejects_demonstrations(tmp_path, caplog):
    path = _write(
        tmp_path / "off.jsonl",
        [
            {"prompt": "What is 2+3?", "completion": "It is 5.", "answer": 5},
            {"prompt": "What is 2+4?", "completion": "It is 7.", "answer": 6},
        ],
    )
    make_acceptor(str(path), read_examples(path))
    assert "rejects 1 of 2 demonstrations (first: " in caplog.text and "off.jsonl:2" in caplog.text
