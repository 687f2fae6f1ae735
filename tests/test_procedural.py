"""Project-generated skills and prior probes: deterministic disjoint splits, and exact scorers on handwritten outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfdistill.tasks import TASKS, get_task
from selfdistill.tasks.procedural import PROCEDURAL_TASKS, PriorProbeTask, RecordJSONTask, TicketLineTask

SKILLS = ("record_json", "ticket_line")


def test_registered():
    for name, cls in PROCEDURAL_TASKS.items():
        assert TASKS[name] is cls and cls.name == name and cls.kind == "generate"


@pytest.mark.parametrize("name", SKILLS)
def test_splits_are_deterministic_disjoint_and_demonstrated(name, tmp_path):
    task, again = get_task(name, tmp_path), get_task(name, Path("/nonexistent"))  # no data directory needed
    train, test = task.train_examples(), task.test_examples()
    assert (len(train), len(test)) == (task.num_train, task.num_test)
    assert [(e.question, e.completion) for e in train + test] == [
        (e.question, e.completion) for e in again.train_examples() + again.test_examples()
    ]
    assert not {e.question for e in train} & {e.question for e in test}
    for example in train + test:
        assert example.completion and example.answer == example.completion
        assert task.score(example, example.completion) == {"acc": 1.0}
        assert task.score(example, "Sure! " + example.completion) == {"acc": 0.0}


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
    for output in (f"#{number} repair {item}", f"{number} REPAIR {item}", f"#{number} EXCHANGE {item}",
                   f"Ticket {number}: REPAIR {item}"):  # fmt: skip
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
