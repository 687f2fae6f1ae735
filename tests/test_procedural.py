"""Project-generated skills and prior probes: deterministic disjoint splits, and exact scorers on handwritten
outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from selfdistill.evaluation.tasks import TASKS, TaskError, get_task
from selfdistill.evaluation.tasks.prior import (
    NEAR_PRIOR_FILE,
    NEAR_TASKS,
    PRIOR_TASKS,
    NearPriorTask,
    PriorProbeTask,
    pool_fingerprint,
)
from selfdistill.evaluation.tasks.procedural import (
    LEAD_INS,
    SKILL_TASKS,
    ZONES,
    ArithStepsTask,
    CSVRowTask,
    ExtractTripTask,
    FactDocTask,
    ProceduralTask,
    RecordJSONTask,
    TicketLineTask,
)

PROCEDURAL_TASKS = {**SKILL_TASKS, **PRIOR_TASKS}
SKILLS = tuple(name for name, cls in PROCEDURAL_TASKS.items() if issubclass(cls, ProceduralTask))


def test_registered():
    for name, cls in PROCEDURAL_TASKS.items():
        assert TASKS[name] is cls and cls.name == name and cls.kind == "generate"


@pytest.mark.parametrize("name", SKILLS)
def test_splits_are_deterministic_disjoint_and_demonstrated(name, tmp_path):
    task, again = get_task(name, tmp_path), get_task(name, Path("/nonexistent"))  # no data directory needed
    train, val, test = task.train_examples(), task.validation_examples(), task.test_examples()
    assert task.has_validation and (len(test), len(val), len(train)) == (128, 128, 512)
    assert (len(train), len(val), len(test)) == (task.num_train, task.num_val, task.num_test)
    assert [(e.question, e.completion, e.context) for e in test + val + train] == [
        (e.question, e.completion, e.context)
        for e in again.test_examples() + again.validation_examples() + again.train_examples()
    ]
    questions = [e.question for e in test + val + train]
    assert len(set(questions)) == len(questions)  # distinct within and across splits
    assert len({e.source for e in test + val + train}) == len(questions)
    for example in test + val + train:
        assert example.completion and example.answer == example.completion
        assert task.score(example, example.completion) == {"acc": 1.0}
        assert task.score(example, f"```\n{example.completion}\n```") == {"acc": 1.0}
    wrong = {e.answer for e in test}
    for example in test:
        other = next(a for a in sorted(wrong) if a.splitlines()[-1] != example.answer.splitlines()[-1])
        assert task.score(example, other) == {"acc": 0.0}
        if name not in ("fact_doc", "arith_steps"):  # these read the value / the last line, so a lead-in is fine
            assert task.score(example, "Sure! " + example.completion) == {"acc": 0.0}


def test_record_json_test_split_is_unchanged_by_the_validation_split():
    test = RecordJSONTask(Path(".")).test_examples()
    assert test[0].question == "Make a record: Mateo Petrov is 64 years old and lives in Malaga."


def test_tasks_without_a_validation_split_say_so():
    for task in (PriorProbeTask(Path(".")), NEAR_TASKS["near_csv_row"](Path("."))):
        assert not task.has_validation
        with pytest.raises(TaskError, match="no validation split"):
            task.validation_examples()


def test_skills_differ_from_each_other():
    a, b = RecordJSONTask(Path(".")).test_examples(), TicketLineTask(Path(".")).test_examples()
    assert a[0].question.startswith("Make a record:") and b[0].question.startswith("Ticket ")


def test_record_json_scorer():
    task = RecordJSONTask(Path("."))
    example = next(e for e in task.test_examples())
    record = json.loads(example.answer)
    reordered = json.dumps(dict(reversed(record.items())), indent=2)
    assert task.score(example, reordered)["acc"] == 1.0  # key order and spacing are free
    assert task.score(example, f"```json\n{example.answer}\n```")["acc"] == 1.0  # a code fence is stripped
    wrong_key = json.dumps({("name" if k == "person" else k): v for k, v in record.items()})
    wrong_type = json.dumps({**record, "age": str(record["age"])})
    for output in (wrong_key, wrong_type, "", "{not json", f"{record['person']} is {record['age']}."):
        assert task.score(example, output)["acc"] == 0.0


def test_ticket_line_scorer():
    task = TicketLineTask(Path("."))
    example = next(e for e in task.test_examples() if "broken" in e.question)
    number = example.question.split()[1].rstrip(":")
    item = example.question.split()[3]
    assert example.answer == f"#{number} REPAIR {item}"
    assert task.score(example, f"  {example.answer}\n")["acc"] == 1.0
    for output in (
        f"#{number} repair {item}",
        f"{number} REPAIR {item}",
        f"#{number} EXCHANGE {item}",
        f"Ticket {number}: REPAIR {item}",
    ):
        assert task.score(example, output)["acc"] == 0.0


def test_prior_probe_scorer():
    task = PriorProbeTask(Path("."))
    examples = task.test_examples()
    assert len(examples) >= 20 and task.train_examples() == []
    paris = next(e for e in examples if "France" in e.question)
    assert task.score(paris, "The capital of France is Paris.")["acc"] == 1.0
    assert task.score(paris, "paris")["acc"] == 1.0
    assert task.score(paris, "It is Lyon.")["acc"] == 0.0
    assert task.score(paris, "Parisian cafes are nice.")["acc"] == 0.0  # whole words only
    dog = next(e for e in examples if "dog" in e.question)
    assert task.score(dog, "A dog has 4 legs.")["acc"] == task.score(dog, "Four.")["acc"] == 1.0


def test_csv_row_follows_the_named_column_order():
    task = CSVRowTask(Path("."))
    orders = set()
    for example in task.test_examples():
        columns = example.question.split("columns ")[1].split(":")[0].split(",")
        orders.add(tuple(columns))
        assert len(example.answer.split(",")) == 3
    assert len(orders) == 6
    example = next(e for e in task.test_examples() if "columns name,age,city:" in e.question)
    name, age, city = example.answer.split(",")
    assert name in example.question and f" {age}" in example.question and city in example.question
    assert task.score(example, f"{name}, {age}, {city}")["acc"] == 0.0  # spacing is part of the format
    assert task.score(example, f"name,age,city\n{example.answer}")["acc"] == 0.0  # no header line


def test_arith_steps_scorer_reads_the_last_answer_line():
    task = ArithStepsTask(Path("."))
    for example in task.test_examples():
        steps = example.answer.splitlines()
        assert len(steps) == 3 and steps[-1].startswith("Answer: ")
        assert all(0 <= int(n) <= 99 for n in re.findall(r"\d+", example.answer))
        for step in steps[:2]:  # each step is right arithmetic
            a, op, b, _, result = step.split()
            assert int(a) + (int(b) if op == "+" else -int(b)) == int(result)
    example = task.test_examples()[0]
    gold = int(example.answer.splitlines()[-1].split()[-1])
    # only the answer line counts
    assert task.score(example, f"Let me see.\nAnswer: {gold}\n\n")["acc"] == 1.0
    for output in (
        f"Answer: {gold + 1}",
        f"The answer is {gold}",
        f"answer: {gold}",
        f"Answer: {gold}\nDone.",
        f"Answer: {gold}.",
        "",
    ):
        assert task.score(example, output)["acc"] == 0.0


def test_extract_trip_scorer():
    task = ExtractTripTask(Path("."))
    templates = set()
    for example in task.test_examples():
        fields = json.loads(example.answer)
        assert list(fields) == ["traveler", "from", "to", "day"] and fields["from"] != fields["to"]
        assert all(v in example.question for v in fields.values())
        templates.add(example.question.split(fields["traveler"])[0][:6])
    assert len(templates) >= 4
    example = task.test_examples()[0]
    fields = json.loads(example.answer)
    assert task.score(example, json.dumps(dict(reversed(fields.items())), indent=2))["acc"] == 1.0
    swapped = json.dumps({**fields, "from": fields["to"], "to": fields["from"]})
    for output in (swapped, json.dumps([fields]), json.dumps({**fields, "mode": "train"}), "{broken"):
        assert task.score(example, output)["acc"] == 0.0


def test_shipping_zone_uses_one_hidden_table():
    task = get_task("shipping_zone", Path("."))
    examples = task.test_examples() + task.validation_examples() + task.train_examples()
    assert sorted(set(ZONES.values())) == [1, 2, 3, 4] and len(ZONES) == 12
    for example in examples:
        country = next(c for c in ZONES if c in example.question)
        assert example.answer == f"Zone {ZONES[country]}"
    assert {e.answer for e in task.test_examples()} == {"Zone 1", "Zone 2", "Zone 3", "Zone 4"}
    example = task.test_examples()[0]
    assert task.score(example, example.answer.lower())["acc"] == 0.0


def test_fact_doc_asks_shared_facts_in_split_specific_phrasings():
    task = FactDocTask(Path("."))
    splits = task.test_examples(), task.validation_examples(), task.train_examples()
    for example in (e for split in splits for e in split):
        assert example.context and re.search(rf"\b{re.escape(example.answer)}\b", example.context)
        company = example.context.split(" is a company")[0]
        assert company in example.question and company not in example.answer

    def phrasing(e):
        lead = max((lead for lead in LEAD_INS if e.question.startswith(lead)), key=len)
        return e.question[len(lead) :].replace(e.context.split(" is a company")[0], "{name}")

    test, val, train = ({phrasing(e) for e in split} for split in splits)
    assert not test & train and not test & val and not val & train
    facts = [{(e.context, e.answer) for e in split} for split in splits]
    assert facts[0] <= facts[2]  # every test fact is taught in train (knowledge injection)
    example = next(e for e in splits[0] if e.answer.isdigit())
    assert task.score(example, f"It was founded in {example.answer}.")["acc"] == 1.0
    assert task.score(example, f"It was founded in {int(example.answer) + 1}.")["acc"] == 0.0
    assert task.score(example, f"In {example.answer}0.")["acc"] == 0.0  # whole words only


def test_near_prior_file_indices_are_valid():
    entries = json.loads(NEAR_PRIOR_FILE.read_text())["tasks"]
    assert set(entries) == set(NEAR_TASKS)
    for name, cls in NEAR_TASKS.items():
        pool = cls(Path("."), all_candidates=True).test_examples()
        entry = entries[name]
        assert entry["candidates"] == len(pool) == cls.num_candidates
        assert entry["fingerprint"] == pool_fingerprint(pool)
        assert entry["kept"] == sorted(set(entry["kept"])) and all(0 <= i < len(pool) for i in entry["kept"])


@pytest.mark.parametrize("name", sorted(NEAR_TASKS))
def test_near_tasks_load_and_score_sentence_answers(name):
    task = get_task(name, Path("."))
    assert isinstance(task, NearPriorTask) and task.train_examples() == []
    examples = task.test_examples()
    assert len(examples) >= 24 and len({e.question for e in examples}) == len(examples)
    skill = PROCEDURAL_TASKS[task.skill](Path("."))
    skill_prompts = {e.question for split in skill.drawn for e in split}
    for example in examples:
        assert example.question not in skill_prompts
        accepted, rejected = example.answer["accept"][0], example.answer["reject"]
        assert task.score(example, f"The answer is {accepted}.") == {"acc": 1.0}
        assert task.score(example, f"{accepted.upper()}") == {"acc": 1.0}
        assert task.score(example, "I am not sure.") == {"acc": 0.0}
        assert task.score(example, f"The answer is {accepted}x.") == {"acc": 0.0}  # whole words only
        if rejected:  # an echo of the other fact (or the skill's whole record) is not the answer
            assert task.score(example, f"{accepted}, {rejected[0]}") == {"acc": 0.0}


def test_near_record_json_rejects_the_skills_output():
    task = get_task("near_record_json", Path("."))
    example = next(e for e in task.test_examples() if "How old" in e.question)
    age = example.answer["accept"][0]
    sentence = example.question.split(" How old")[0]
    person, city = sentence.split(" is ")[0], sentence.split("lives in ")[1].rstrip(".")
    assert task.score(example, f"{person} is {age} years old.")["acc"] == 1.0
    record = json.dumps({"person": person, "age": int(age), "home": city})
    assert task.score(example, record)["acc"] == 0.0


def test_near_task_with_a_stale_selection_fails(monkeypatch):
    cls = NEAR_TASKS["near_arith_steps"]
    monkeypatch.setattr(cls, "num_candidates", cls.num_candidates - 1)
    with pytest.raises(TaskError, match="rerun"):
        cls(Path(".")).test_examples()
