"""Skills the project generates itself (seeded, offline, exact scorers), and prior-capability probes.

    task = TASKS["record_json"](data_dir)     # data_dir is not used: the examples are generated
    task.score(task.test_examples()[0], '{"person": "Ava Novak", "age": 34, "home": "Porto"}')

The skills are output formats the base model cannot guess from the prompt: the prompt asks for "a record" or
"a ticket line", and only the demonstration shows what that is. A teacher that sees the demonstration can copy the
format; a student without it cannot; after training it should. ``prior_probe`` holds simple questions the embedded
base model answers right (chosen for that), so any drop on it after training is capability lost.

Each skill draws its items with ``random.Random(<task name>)`` (deterministic across runs and platforms): the first
``num_test`` distinct prompts are the test split, the next ``num_train`` the training split, with no prompt in both.
"""

from __future__ import annotations

import json
import random
import re
from typing import ClassVar

from selfdistill.data import Example
from selfdistill.tasks.base import GenerationTask, SplitTask, user_turn

FIRST_NAMES = ("Ava", "Liam", "Noor", "Mateo", "Ines", "Kenji", "Sofia", "Omar", "Lena", "Tariq", "Mira", "Jonas",
               "Priya", "Felix", "Hana", "Diego", "Yara", "Arjun", "Elif", "Bruno")  # fmt: skip
LAST_NAMES = ("Lindqvist", "Okafor", "Brandt", "Moreau", "Castillo", "Haddad", "Novak", "Tanaka", "Keller", "Duarte",
              "Sato", "Petrov", "Nguyen", "Silva", "Fischer", "Rossi")  # fmt: skip
CITIES = ("Porto", "Lyon", "Oslo", "Quito", "Hanoi", "Perth", "Tunis", "Graz", "Cork", "Leeds", "Bergen", "Malaga",
          "Turin", "Krakow", "Dakar", "Osaka")  # fmt: skip
ITEMS = ("lamp", "kettle", "chair", "bicycle", "printer", "camera", "jacket", "mirror", "blender", "heater", "clock",
         "guitar", "tablet", "helmet", "speaker", "backpack")  # fmt: skip
ISSUES = {"broken": "REPAIR", "missing a part": "PARTS", "the wrong color": "EXCHANGE", "arrived late": "DELAY"}


def _normalize(text: str) -> str:
    """Strip surrounding whitespace and markdown code fences/backticks a chat model may wrap a one-liner in."""
    text = text.strip()
    fenced = re.fullmatch(r"```[\w-]*\s*\n?(.*?)\n?```", text, re.DOTALL)
    return (fenced.group(1) if fenced else text).strip().strip("`").strip()


class ProceduralTask(SplitTask):
    """A generated skill: ``make(rng) -> (prompt, demonstration)``; the demonstration is the exact answer."""

    primary_metric = "acc"
    max_new_tokens = 48
    num_train: ClassVar[int] = 512
    num_test: ClassVar[int] = 128

    def make(self, rng: random.Random) -> tuple[str, str]:
        raise NotImplementedError

    def load_splits(self) -> tuple[list[Example], list[Example]]:
        rng = random.Random(self.name)
        seen: dict[str, str] = {}
        for _ in range(100 * (self.num_train + self.num_test)):
            if len(seen) == self.num_train + self.num_test:
                break
            prompt, demo = self.make(rng)
            seen.setdefault(prompt, demo)
        else:
            raise RuntimeError(f"{self.name}: could not draw {self.num_train + self.num_test} distinct prompts")
        examples = [
            Example(user_turn(prompt), demo, None, demo, f"{self.name}/{i}") for i, (prompt, demo) in enumerate(seen.items())
        ]
        return examples[self.num_test :], examples[: self.num_test]

    def score(self, example: Example, output: str) -> dict[str, float]:
        return {"acc": float(_normalize(output) == example.answer)}


class RecordJSONTask(ProceduralTask):
    """Skill A: turn a sentence about a person into a one-line JSON record with fixed, unguessable keys.

    Prompt: ``Make a record: Ava Novak is 34 years old and lives in Porto.``
    Answer: ``{"person": "Ava Novak", "age": 34, "home": "Porto"}``. Metric ``acc``: the output (code fences
    stripped) parses as a JSON object equal to the answer's (key order and spacing free).
    """

    name = "record_json"
    max_new_tokens = 40  # answers are 22-27 tokens

    def make(self, rng: random.Random) -> tuple[str, str]:
        person = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        age, city = rng.randint(18, 80), rng.choice(CITIES)
        record = {"person": person, "age": age, "home": city}
        return f"Make a record: {person} is {age} years old and lives in {city}.", json.dumps(record)

    def score(self, example: Example, output: str) -> dict[str, float]:
        try:
            value = json.loads(_normalize(output))
        except json.JSONDecodeError:
            return {"acc": 0.0}
        return {"acc": float(value == json.loads(example.answer))}


class TicketLineTask(ProceduralTask):
    """Skill B: turn a customer message into a ticket line: number, an action code from the complaint, the item.

    Prompt: ``Ticket 482: my kettle is broken.``  Answer: ``#482 REPAIR kettle``. The codes (REPAIR for broken,
    PARTS for missing a part, EXCHANGE for the wrong color, DELAY for arrived late) appear only in demonstrations.
    Metric ``acc``: the output (whitespace and code fences stripped) equals the answer exactly.
    """

    name = "ticket_line"
    max_new_tokens = 16  # answers are 7-8 tokens

    def make(self, rng: random.Random) -> tuple[str, str]:
        number, item = rng.randint(100, 999), rng.choice(ITEMS)
        issue = rng.choice(sorted(ISSUES))
        verb = "arrived late" if issue == "arrived late" else f"is {issue}"
        return f"Ticket {number}: my {item} {verb}.", f"#{number} {ISSUES[issue]} {item}"


# ---------------------------------------------------------------- prior capability

PROBES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("What is the capital of Italy?", ("Rome",)),
    ("What is the capital of Germany?", ("Berlin",)),
    ("What is the capital of Spain?", ("Madrid",)),
    ("What is the capital of England?", ("London",)),
    ("What is the capital of Russia?", ("Moscow",)),
    ("What is the capital of Egypt?", ("Cairo",)),
    ("What is the capital of China?", ("Beijing",)),
    ("What is the capital of Greece?", ("Athens",)),
    ("What is the capital of Portugal?", ("Lisbon",)),
    ("What is the capital of Canada?", ("Ottawa",)),
    ("What is the opposite of hot?", ("cold",)),
    ("What is the opposite of up?", ("down",)),
    ("What is the opposite of big?", ("small", "little")),
    ("What is the opposite of day?", ("night",)),
    ("What is the opposite of fast?", ("slow",)),
    ("What is the opposite of wet?", ("dry",)),
    ("What is the opposite of open?", ("closed", "shut")),
    ("What is the opposite of light?", ("dark", "heavy")),
    ("What is the opposite of happy?", ("sad", "unhappy")),
    ("What is the opposite of old?", ("young", "new")),
    ("What is the opposite of left?", ("right",)),
    ("What is the opposite of true?", ("false",)),
    ("How many legs does a dog have?", ("four", "4")),
    ("How many days are in a week?", ("seven", "7")),
    ("How many months are in a year?", ("twelve", "12")),
    ("How many sides does a triangle have?", ("three", "3")),
    ("What is 2 + 2?", ("four", "4")),
    ("What is 3 + 5?", ("eight", "8")),
    ("What do bees make?", ("honey",)),
    ("What is frozen water called?", ("ice",)),
    ("What do you call a baby cat?", ("kitten",)),
    ("What gas do humans need to breathe to live?", ("oxygen",)),
    ("What is the largest ocean on Earth?", ("Pacific",)),
    ("What is the chemical symbol for water?", ("H2O",)),
    ("What language is spoken in Brazil?", ("Portuguese",)),
    ("What is the boiling point of water in Celsius?", ("100",)),
)
"""Kept from 54 candidate questions: the 38 the embedded base model answered right (greedy, 24 tokens). Dropped were
wrong answers (a bicycle "has 8 wheels") and lucky matches (an answer word echoed inside a wrong sentence)."""


class PriorProbeTask(GenerationTask):
    """Prior capability, offline: 38 short questions the embedded base model answers right (test split only).

    Metric ``acc``: one of the accepted answers occurs in the output as a whole word, ignoring case.
    """

    name = "prior_probe"
    primary_metric = "acc"
    max_new_tokens = 24

    def test_examples(self) -> list[Example]:
        return [
            Example(user_turn(f"{question} Answer in one short sentence."), None, None, list(answers), f"prior_probe/{i}")
            for i, (question, answers) in enumerate(PROBES)
        ]

    def score(self, example: Example, output: str) -> dict[str, float]:
        hit = any(re.search(rf"\b{re.escape(answer)}\b", output, re.IGNORECASE) for answer in example.answer)
        return {"acc": float(hit)}


PROCEDURAL_TASKS: dict[str, type[GenerationTask]] = {
    "record_json": RecordJSONTask,
    "ticket_line": TicketLineTask,
    "prior_probe": PriorProbeTask,
}
