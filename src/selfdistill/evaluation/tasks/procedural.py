"""Skills the project generates itself (seeded, offline, exact scorers), each with test, validation and train splits.

    task = TASKS["record_json"](data_dir)     # data_dir is not used: the examples are generated
    task.score(task.test_examples()[0], '{"person": "Ava Novak", "age": 34, "home": "Porto"}')

The skills, for a forgetting benchmark, are behaviours the base model cannot guess from the prompt, each of a
different kind: unstated output formats (``record_json``, ``ticket_line``), a format the prompt names (``csv_row``),
a worked procedure (``arith_steps``), extraction into a structure (``extract_trip``), a hidden mapping
(``shipping_zone``) and new facts from a document only the teacher sees (``fact_doc``). A teacher that sees the
demonstration (or document) can copy it; a student without it cannot; after training it should.
The prior capabilities measured beside them (``prior_probe`` and the near-prior tasks) are in ``prior.py``.

Each skill draws its items with ``random.Random(<task name>)`` (deterministic across runs and platforms): the first
``num_test`` (128) distinct prompts are the test split, the next ``num_val`` (128) the validation split, the next
``num_train`` (512) the training split; no prompt is in two splits.

The near-prior tasks (``prior.py``) were kept by ``benchmarks/select_near_prior.py`` (greedy, embedded base model,
CPU "AMD EPYC", 2 threads), of 96 candidates each: near_record_json 65, near_ticket_line 39, near_csv_row 45,
near_arith_steps 38 (single-digit sums; the first design, 2-digit sums and differences, kept 8),
near_extract_trip 31, near_shipping_zone 84, near_fact_doc 59.
"""

from __future__ import annotations

import json
import random
import re
from functools import cached_property
from typing import ClassVar

from selfdistill.data import Example
from selfdistill.evaluation.tasks.base import SplitTask, user_turn

FIRST_NAMES = (
    "Ava",
    "Liam",
    "Noor",
    "Mateo",
    "Ines",
    "Kenji",
    "Sofia",
    "Omar",
    "Lena",
    "Tariq",
    "Mira",
    "Jonas",
    "Priya",
    "Felix",
    "Hana",
    "Diego",
    "Yara",
    "Arjun",
    "Elif",
    "Bruno",
)
LAST_NAMES = (
    "Lindqvist",
    "Okafor",
    "Brandt",
    "Moreau",
    "Castillo",
    "Haddad",
    "Novak",
    "Tanaka",
    "Keller",
    "Duarte",
    "Sato",
    "Petrov",
    "Nguyen",
    "Silva",
    "Fischer",
    "Rossi",
)
CITIES = (
    "Porto",
    "Lyon",
    "Oslo",
    "Quito",
    "Hanoi",
    "Perth",
    "Tunis",
    "Graz",
    "Cork",
    "Leeds",
    "Bergen",
    "Malaga",
    "Turin",
    "Krakow",
    "Dakar",
    "Osaka",
)
ITEMS = (
    "lamp",
    "kettle",
    "chair",
    "bicycle",
    "printer",
    "camera",
    "jacket",
    "mirror",
    "blender",
    "heater",
    "clock",
    "guitar",
    "tablet",
    "helmet",
    "speaker",
    "backpack",
)
ISSUES = {"broken": "REPAIR", "missing a part": "PARTS", "the wrong color": "EXCHANGE", "arrived late": "DELAY"}


def _normalize(text: str) -> str:
    """Strip surrounding whitespace and markdown code fences/backticks a chat model may wrap a one-liner in."""
    text = text.strip()
    fenced = re.fullmatch(r"```[\w-]*\s*\n?(.*?)\n?```", text, re.DOTALL)
    return (fenced.group(1) if fenced else text).strip().strip("`").strip()


def _same_json(output: str, answer: str) -> float:
    """1.0 when the output (code fences stripped) parses as the same JSON value as the answer, else 0.0."""
    try:
        value = json.loads(_normalize(output))
    except json.JSONDecodeError:
        return 0.0
    return float(value == json.loads(answer))


def _has_word(word: str, text: str) -> bool:
    """Whether ``word`` (one or more words) occurs in ``text`` as whole word(s), ignoring case."""
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None


class ProceduralTask(SplitTask):
    """A generated skill: ``make(rng, split) -> (prompt, demonstration, context)``; the demonstration is the exact
    answer, ``context`` the privileged text only the teacher sees (None for most skills). ``split`` is the split
    being drawn (test, validation, train), for skills whose splits differ by more than the draw (``fact_doc``)."""

    primary_metric = "acc"
    max_new_tokens = 48
    num_test: ClassVar[int] = 128
    num_val: ClassVar[int] = 128
    num_train: ClassVar[int] = 512
    has_validation = True

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        raise NotImplementedError

    @cached_property
    def drawn(self) -> tuple[list[Example], list[Example], list[Example]]:
        """``(test, validation, train)``: the first ``num_test`` distinct prompts, the next ``num_val``, the rest."""
        rng = random.Random(self.name)
        seen: set[str] = set()
        splits: list[list[Example]] = []
        for split, size in (("test", self.num_test), ("validation", self.num_val), ("train", self.num_train)):
            examples: list[Example] = []
            tries = 0
            while len(examples) < size:
                if (tries := tries + 1) > 100 * size:
                    raise RuntimeError(f"{self.name}: could not draw {size} distinct {split} prompts")
                prompt, demo, context = self.make(rng, split)
                if prompt not in seen:
                    source = f"{self.name}/{len(seen)}"
                    seen.add(prompt)
                    examples.append(Example(user_turn(prompt), demo, context, demo, source))
            splits.append(examples)
        return splits[0], splits[1], splits[2]

    def load_splits(self) -> tuple[list[Example], list[Example]]:
        test, _, train = self.drawn
        return train, test

    def validation_examples(self) -> list[Example]:
        return self.drawn[1]

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

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        person = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        age, city = rng.randint(18, 80), rng.choice(CITIES)
        record = {"person": person, "age": age, "home": city}
        return f"Make a record: {person} is {age} years old and lives in {city}.", json.dumps(record), None

    def score(self, example: Example, output: str) -> dict[str, float]:
        return {"acc": _same_json(output, example.answer)}


class TicketLineTask(ProceduralTask):
    """Skill B: turn a customer message into a ticket line: number, an action code from the complaint, the item.

    Prompt: ``Ticket 482: my kettle is broken.``  Answer: ``#482 REPAIR kettle``. The codes (REPAIR for broken,
    PARTS for missing a part, EXCHANGE for the wrong color, DELAY for arrived late) appear only in demonstrations.
    Metric ``acc``: the output (whitespace and code fences stripped) equals the answer exactly.
    """

    name = "ticket_line"
    max_new_tokens = 16  # answers are 7-8 tokens

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        number, item = rng.randint(100, 999), rng.choice(ITEMS)
        issue = rng.choice(sorted(ISSUES))
        verb = "arrived late" if issue == "arrived late" else f"is {issue}"
        return f"Ticket {number}: my {item} {verb}.", f"#{number} {ISSUES[issue]} {item}", None


CSV_TEMPLATES = (
    "{name} is {age} years old and lives in {city}.",
    "{name}, aged {age}, lives in {city}.",
    "{name} lives in {city} and is {age}.",
    "At {age}, {name} makes a home in {city}.",
    "Living in {city}, {name} is {age} years old.",
)


class CSVRowTask(ProceduralTask):
    """Skill C: a format the prompt names: a sentence about a person as one CSV row, columns in the order asked.

    Prompt: ``Write as a CSV row with columns age,name,city: Ava Novak, aged 34, lives in Porto.``
    Answer: ``34,Ava Novak,Porto``. Five sentence templates, all six column orders. Metric ``acc``: the output
    (whitespace and code fences stripped) equals the answer exactly.
    """

    name = "csv_row"
    max_new_tokens = 24  # answers are 9-14 tokens

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        values = {
            "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            "age": str(rng.randint(18, 80)),
            "city": rng.choice(CITIES),
        }
        columns = rng.sample(sorted(values), 3)
        sentence = rng.choice(CSV_TEMPLATES).format(**values)
        prompt = f"Write as a CSV row with columns {','.join(columns)}: {sentence}"
        return prompt, ",".join(values[c] for c in columns), None


class ArithStepsTask(ProceduralTask):
    """Skill D: a worked procedure: two 2-digit operations, one line per step, then an answer line.

    Prompt: ``Compute 17 + 25 - 19.``  Answer: ``17 + 25 = 42\\n42 - 19 = 23\\nAnswer: 23``. Every intermediate
    result lies in 0-99. Metric ``acc``: the output's last non-empty line is exactly ``Answer: <gold number>``
    (the steps above it are not checked).
    """

    name = "arith_steps"
    max_new_tokens = 40  # answers are 25-27 tokens

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        while True:
            a, b, c = rng.randint(10, 60), rng.randint(10, 40), rng.randint(10, 40)
            op1, op2 = rng.choice("+-"), rng.choice("+-")
            r1 = a + b if op1 == "+" else a - b
            r2 = r1 + c if op2 == "+" else r1 - c
            if 0 <= r1 <= 99 and 0 <= r2 <= 99:
                break
        verb = rng.choice(("Compute", "Calculate", "Work out"))
        demo = f"{a} {op1} {b} = {r1}\n{r1} {op2} {c} = {r2}\nAnswer: {r2}"
        return f"{verb} {a} {op1} {b} {op2} {c}.", demo, None

    def score(self, example: Example, output: str) -> dict[str, float]:
        lines = [line.strip() for line in _normalize(output).splitlines() if line.strip()]
        return {"acc": float(bool(lines) and lines[-1] == example.answer.splitlines()[-1])}


DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TRIP_TEMPLATES = (
    "Hi, this is {traveler}. I need a {mode} from {origin} to {to} on {day}.",
    "{traveler} here: please book me a {mode} to {to}, leaving {origin} on {day}.",
    "Can you find a {mode} for {traveler}? Going from {origin} to {to} on {day}.",
    "On {day} I, {traveler}, want to take the {mode} from {origin} to {to}.",
    "Booking request from {traveler}: {origin} to {to} by {mode}, {day}.",
)


def trip_request(rng: random.Random) -> tuple[str, dict[str, str]]:
    """A free-text travel request and its fields (traveler, from, to, day); ``extract_trip`` and its near task."""
    origin, to = rng.sample(CITIES, 2)
    fields = {"traveler": rng.choice(FIRST_NAMES), "from": origin, "to": to, "day": rng.choice(DAYS)}
    mode = rng.choice(("train", "bus", "coach", "ferry"))
    text = rng.choice(TRIP_TEMPLATES).format(
        mode=mode, origin=origin, to=to, traveler=fields["traveler"], day=fields["day"]
    )
    return text, fields


class ExtractTripTask(ProceduralTask):
    """Skill E: extraction into a structure: a free-text travel request (five templates) as a JSON object.

    Prompt: ``Hi, this is Omar. I need a train from Porto to Lyon on Tuesday.``
    Answer: ``{"traveler": "Omar", "from": "Porto", "to": "Lyon", "day": "Tuesday"}`` (the mode of travel is left
    out). Metric ``acc``: the output (code fences stripped) parses as a JSON object equal to the answer's.
    """

    name = "extract_trip"
    max_new_tokens = 48  # answers are 28-31 tokens

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        text, fields = trip_request(rng)
        return text, json.dumps(fields), None

    def score(self, example: Example, output: str) -> dict[str, float]:
        return {"acc": _same_json(output, example.answer)}


ZONES = {
    "France": 1,
    "Germany": 3,
    "Belgium": 1,
    "Portugal": 2,
    "Spain": 4,
    "Italy": 2,
    "Canada": 3,
    "Brazil": 1,
    "Japan": 4,
    "Egypt": 2,
    "India": 3,
    "Australia": 4,
}
"""The hidden shipping table: 12 countries, 3 to each of 4 zones, deliberately not by geography."""
ZONE_TEMPLATES = (
    "Parcel {n} to {country}: which zone?",
    "Which zone is parcel {n} for {country}?",
    "Shipping parcel {n} to {country}. What zone?",
)


class ShippingZoneTask(ProceduralTask):
    """Skill F: a mapping only the demonstrations reveal: the shipping zone of a parcel's destination country.

    Prompt: ``Parcel 4821 to Portugal: which zone?``  Answer: ``Zone 2``. The table (:data:`ZONES`) is the same in
    every split; the splits differ in parcel number and template. Metric ``acc``: the output (whitespace and code
    fences stripped) equals the answer exactly.
    """

    name = "shipping_zone"
    max_new_tokens = 8  # answers are 3 tokens

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        country = rng.choice(sorted(ZONES))
        prompt = rng.choice(ZONE_TEMPLATES).format(n=rng.randint(1000, 9999), country=country)
        return prompt, f"Zone {ZONES[country]}", None


COMPANIES = (
    ("Velmora", 1871, "Brackenford", "lanterns"),
    ("Quillan", 1894, "Millhaven", "saddles"),
    ("Brasswick", 1903, "Ashcombe", "kites"),
    ("Tessaro", 1912, "Dunmere", "violins"),
    ("Orrinvale", 1925, "Kelthorpe", "umbrellas"),
    ("Halvardine", 1931, "Rosswick", "telescopes"),
    ("Mirelle", 1948, "Tarnby", "candles"),
    ("Duskfield", 1956, "Greywater", "bicycles"),
    ("Pellworth", 1962, "Oakhollow", "teapots"),
    ("Cindral", 1977, "Westmarch", "compasses"),
    ("Ostmere", 1983, "Lowmoor", "typewriters"),
    ("Larkspire", 1990, "Cresthill", "hammocks"),
    ("Fennimore", 1998, "Stonebury", "skates"),
    ("Zorvath", 2004, "Winterlea", "pianos"),
    ("Keswyn", 2011, "Marrowby", "barometers"),
    ("Ambrel", 2016, "Thistledown", "sundials"),
)
"""Invented companies: (name, founded, town, product)."""
FACT_QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "founded": (
            "In what year was {name} founded?",
            "When was {name} founded?",
            "What year did {name} start?",
            "{name} was founded in which year?",
        ),
        "town": (
            "In which town is {name} based?",
            "Where is {name} based?",
            "What town is {name} located in?",
            "{name} is based in which town?",
        ),
        "product": (
            "What does {name} make?",
            "What product is {name} known for?",
            "What does {name} manufacture?",
            "{name} makes what?",
        ),
    },
    "validation": {
        "founded": ("Which year was {name} established?", "Tell me the founding year of {name}."),
        "town": ("Which town is home to {name}?", "Name the town where {name} has its base."),
        "product": ("What kind of goods does {name} produce?", "Name the product {name} sells."),
    },
    "test": {
        "founded": (
            "What is the founding year of {name}?",
            "Since what year has {name} existed?",
            "{name} dates from which year?",
        ),
        "town": ("In what town can you find {name}?", "Where is {name} located?", "In which town is {name} found?"),
        "product": ("What are {name}'s products?", "What items does {name} produce?", "What is made by {name}?"),
    },
}
"""Question phrasings per split and attribute; no phrasing is in two splits."""
LEAD_INS = (
    "",
    "Quick question: ",
    "Question: ",
    "I am curious. ",
    "Please answer: ",
    "Tell me this: ",
    "Hello! ",
    "One more thing: ",
)


def company_document(name: str, founded: int, town: str, product: str) -> str:
    """The document the teacher sees: all three facts of one company."""
    return f"{name} is a company based in the town of {town}. It was founded in {founded} and makes {product}."


class FactDocTask(ProceduralTask):
    """Skill G: new facts from a document the teacher sees: 16 invented companies, 3 facts each (:data:`COMPANIES`).

    Prompt: ``Question: What is the founding year of Velmora?``  Answer: ``1871``. ``Example.context`` is the
    company's document (``Velmora is a company based in the town of Brackenford. It was founded in 1871 and makes
    lanterns.``): the teacher sees it, the student does not. The facts are the same in every split by design (this
    is knowledge injection: train on them, ask them back); the splits differ in the question phrasing
    (:data:`FACT_QUESTIONS`: 4 per attribute for train, 2 for validation, 3 for test, none shared) and a lead-in
    from :data:`LEAD_INS`. Metric ``acc``: the value occurs in the output as whole word(s), ignoring case.
    """

    name = "fact_doc"
    max_new_tokens = 16  # answers are 1-4 tokens

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        name, founded, town, product = rng.choice(COMPANIES)
        attribute = rng.choice(("founded", "town", "product"))
        question = rng.choice(FACT_QUESTIONS[split][attribute]).format(name=name)
        value = {"founded": str(founded), "town": town, "product": product}[attribute]
        return rng.choice(LEAD_INS) + question, value, company_document(name, founded, town, product)

    def score(self, example: Example, output: str) -> dict[str, float]:
        return {"acc": float(_has_word(example.answer, output))}


SKILL_TASKS: dict[str, type[ProceduralTask]] = {
    cls.name: cls
    for cls in (
        RecordJSONTask,
        TicketLineTask,
        CSVRowTask,
        ArithStepsTask,
        ExtractTripTask,
        ShippingZoneTask,
        FactDocTask,
    )
}
