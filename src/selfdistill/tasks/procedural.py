"""Skills the project generates itself (seeded, offline, exact scorers), and prior-capability probes.

    task = TASKS["record_json"](data_dir)     # data_dir is not used: the examples are generated
    task.score(task.test_examples()[0], '{"person": "Ava Novak", "age": 34, "home": "Porto"}')

The skills, for a forgetting benchmark, are behaviours the base model cannot guess from the prompt, each of a
different kind: unstated output formats (``record_json``, ``ticket_line``), a format the prompt names (``csv_row``),
a worked procedure (``arith_steps``), extraction into a structure (``extract_trip``), a hidden mapping
(``shipping_zone``) and new facts from a document only the teacher sees (``fact_doc``). A teacher that sees the
demonstration (or document) can copy it; a student without it cannot; after training it should.
``prior_probe`` holds simple questions the embedded base model answers right (chosen for that), so any drop on it
after training is capability lost.

Each skill draws its items with ``random.Random(<task name>)`` (deterministic across runs and platforms): the first
``num_test`` (128) distinct prompts are the test split, the next ``num_val`` (128) the validation split, the next
``num_train`` (512) the training split; no prompt is in two splits.

Each ``near_<skill>`` task is prior capability next to one skill: the skill's prompt surface with another question
the base model already answers (an age asked of a record sentence, a capital asked of a parcel prompt), which
training the skill could overwrite. Kept by ``benchmarks/select_near_prior.py`` (greedy, embedded base model, CPU
"AMD EPYC", 2 threads), of 96 candidates each: near_record_json 65, near_ticket_line 39, near_csv_row 45,
near_arith_steps 38 (single-digit sums; the first design, 2-digit sums and differences, kept 8),
near_extract_trip 31, near_shipping_zone 84, near_fact_doc 59.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from selfdistill.data import Example
from selfdistill.tasks.base import GenerationTask, SplitTask, TaskError, user_turn

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

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        number, item = rng.randint(100, 999), rng.choice(ITEMS)
        issue = rng.choice(sorted(ISSUES))
        verb = "arrived late" if issue == "arrived late" else f"is {issue}"
        return f"Ticket {number}: my {item} {verb}.", f"#{number} {ISSUES[issue]} {item}", None


CSV_TEMPLATES = ("{name} is {age} years old and lives in {city}.", "{name}, aged {age}, lives in {city}.",
                 "{name} lives in {city} and is {age}.", "At {age}, {name} makes a home in {city}.",
                 "Living in {city}, {name} is {age} years old.")  # fmt: skip


class CSVRowTask(ProceduralTask):
    """Skill C: a format the prompt names: a sentence about a person as one CSV row, columns in the order asked.

    Prompt: ``Write as a CSV row with columns age,name,city: Ava Novak, aged 34, lives in Porto.``
    Answer: ``34,Ava Novak,Porto``. Five sentence templates, all six column orders. Metric ``acc``: the output
    (whitespace and code fences stripped) equals the answer exactly.
    """

    name = "csv_row"
    max_new_tokens = 24  # answers are 9-14 tokens

    def make(self, rng: random.Random, split: str) -> tuple[str, str, str | None]:
        values = {"name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}", "age": str(rng.randint(18, 80)),
                  "city": rng.choice(CITIES)}  # fmt: skip
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
TRIP_TEMPLATES = ("Hi, this is {traveler}. I need a {mode} from {origin} to {to} on {day}.",
                  "{traveler} here: please book me a {mode} to {to}, leaving {origin} on {day}.",
                  "Can you find a {mode} for {traveler}? Going from {origin} to {to} on {day}.",
                  "On {day} I, {traveler}, want to take the {mode} from {origin} to {to}.",
                  "Booking request from {traveler}: {origin} to {to} by {mode}, {day}.")  # fmt: skip


def trip_request(rng: random.Random) -> tuple[str, dict[str, str]]:
    """A free-text travel request and its fields (traveler, from, to, day); ``extract_trip`` and its near task."""
    origin, to = rng.sample(CITIES, 2)
    fields = {"traveler": rng.choice(FIRST_NAMES), "from": origin, "to": to, "day": rng.choice(DAYS)}
    mode = rng.choice(("train", "bus", "coach", "ferry"))
    text = rng.choice(TRIP_TEMPLATES).format(mode=mode, origin=origin, to=to, traveler=fields["traveler"], day=fields["day"])
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
        try:
            value = json.loads(_normalize(output))
        except json.JSONDecodeError:
            return {"acc": 0.0}
        return {"acc": float(value == json.loads(example.answer))}


ZONES = {"France": 1, "Germany": 3, "Belgium": 1, "Portugal": 2, "Spain": 4, "Italy": 2, "Canada": 3, "Brazil": 1,
         "Japan": 4, "Egypt": 2, "India": 3, "Australia": 4}  # fmt: skip
"""The hidden shipping table: 12 countries, 3 to each of 4 zones, deliberately not by geography."""
ZONE_TEMPLATES = ("Parcel {n} to {country}: which zone?", "Which zone is parcel {n} for {country}?",
                  "Shipping parcel {n} to {country}. What zone?")  # fmt: skip


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


COMPANIES = (("Velmora", 1871, "Brackenford", "lanterns"), ("Quillan", 1894, "Millhaven", "saddles"),
             ("Brasswick", 1903, "Ashcombe", "kites"), ("Tessaro", 1912, "Dunmere", "violins"),
             ("Orrinvale", 1925, "Kelthorpe", "umbrellas"), ("Halvardine", 1931, "Rosswick", "telescopes"),
             ("Mirelle", 1948, "Tarnby", "candles"), ("Duskfield", 1956, "Greywater", "bicycles"),
             ("Pellworth", 1962, "Oakhollow", "teapots"), ("Cindral", 1977, "Westmarch", "compasses"),
             ("Ostmere", 1983, "Lowmoor", "typewriters"), ("Larkspire", 1990, "Cresthill", "hammocks"),
             ("Fennimore", 1998, "Stonebury", "skates"), ("Zorvath", 2004, "Winterlea", "pianos"),
             ("Keswyn", 2011, "Marrowby", "barometers"), ("Ambrel", 2016, "Thistledown", "sundials"))  # fmt: skip
"""Invented companies: (name, founded, town, product)."""
FACT_QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "founded": ("In what year was {name} founded?", "When was {name} founded?", "What year did {name} start?",
                    "{name} was founded in which year?"),
        "town": ("In which town is {name} based?", "Where is {name} based?", "What town is {name} located in?",
                 "{name} is based in which town?"),
        "product": ("What does {name} make?", "What product is {name} known for?", "What does {name} manufacture?",
                    "{name} makes what?"),
    },
    "validation": {
        "founded": ("Which year was {name} established?", "Tell me the founding year of {name}."),
        "town": ("Which town is home to {name}?", "Name the town where {name} has its base."),
        "product": ("What kind of goods does {name} produce?", "Name the product {name} sells."),
    },
    "test": {
        "founded": ("What is the founding year of {name}?", "Since what year has {name} existed?",
                    "{name} dates from which year?"),
        "town": ("In what town can you find {name}?", "Where is {name} located?", "In which town is {name} found?"),
        "product": ("What are {name}'s products?", "What items does {name} produce?", "What is made by {name}?"),
    },
}  # fmt: skip
"""Question phrasings per split and attribute; no phrasing is in two splits."""
LEAD_INS = ("", "Quick question: ", "Question: ", "I am curious. ", "Please answer: ", "Tell me this: ", "Hello! ",
            "One more thing: ")  # fmt: skip


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
        return {"acc": float(any(_has_word(answer, output) for answer in example.answer))}


# ---------------------------------------------------------------- near-prior capability

NEAR_PRIOR_FILE = Path(__file__).with_name("near_prior.json")
"""Which candidates each near task keeps: written by ``benchmarks/select_near_prior.py`` from the base model's
answers, with each pool's size and fingerprint (a changed pool makes the file stale, and loading fails)."""


class NearPriorTask(GenerationTask):
    """Prior capability next to a skill: the skill's prompt surface with another question, which the embedded base
    model answers right (test split only). Training the skill could overwrite it with the skill's output.

    Each near task draws a seeded pool of ``num_candidates`` prompts (``draw``; none built on a sentence that is in
    one of the skill's own prompts) and keeps the ones listed in :data:`NEAR_PRIOR_FILE`. Metric ``acc``: an
    accepted answer occurs in the output as a whole word, ignoring case, and no rejected word does; the rejected
    words are other facts of the same prompt (the city for an age question, say), so a verbatim echo of the prompt
    or the skill's full record (a JSON object, a CSV row, a ticket line) does not count as the answer.
    """

    primary_metric = "acc"
    max_new_tokens = 32
    num_candidates: ClassVar[int] = 96
    skill: ClassVar[str]

    def __init__(self, data_dir: Path, *, all_candidates: bool = False):
        super().__init__(data_dir)
        self.all_candidates = all_candidates
        """Test on the whole pool, not the kept subset (what the selection script measures)."""

    def draw(self, rng: random.Random) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        """``(surface, prompt, accepted answers, rejected words)``; ``surface`` is the part shared with the skill."""
        raise NotImplementedError

    def pool(self) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        """The candidates ``(prompt, accepted, rejected)``, in draw order."""
        skill = PROCEDURAL_TASKS[self.skill](self.data_dir)
        taken = "\n".join(e.question for split in skill.drawn for e in split).lower()
        rng, out = random.Random(self.name), {}
        for _ in range(100 * self.num_candidates):
            if len(out) == self.num_candidates:
                break
            surface, prompt, accepted, rejected = self.draw(rng)
            if surface.lower() not in taken:
                out.setdefault(prompt, (accepted, rejected))
        if len(out) < self.num_candidates:
            raise RuntimeError(f"{self.name}: could not draw {self.num_candidates} distinct candidates")
        return [(prompt, *answers) for prompt, answers in out.items()]

    def candidates(self) -> list[Example]:
        out = []
        for i, (prompt, accepted, rejected) in enumerate(self.pool()):
            answer = {"accept": list(accepted), "reject": list(rejected)}
            out.append(Example(user_turn(prompt), None, None, answer, f"{self.name}/{i}"))
        return out

    def test_examples(self) -> list[Example]:
        candidates = self.candidates()
        if self.all_candidates:
            return candidates
        entry = json.loads(NEAR_PRIOR_FILE.read_text(encoding="utf-8"))["tasks"].get(self.name)
        if entry is None or entry["fingerprint"] != pool_fingerprint(candidates):
            raise TaskError(f"{NEAR_PRIOR_FILE}: no selection for {self.name}'s current candidate pool; rerun "
                            "benchmarks/select_near_prior.py")  # fmt: skip
        return [candidates[i] for i in entry["kept"]]

    def score(self, example: Example, output: str) -> dict[str, float]:
        hit = any(_has_word(w, output) for w in example.answer["accept"])
        return {"acc": float(hit and not any(_has_word(w, output) for w in example.answer["reject"]))}


def pool_fingerprint(candidates: list[Example]) -> str:
    """A short hash of a pool's prompts and answers: the selection file names the pool it was measured on."""
    text = json.dumps([[e.question, e.answer] for e in candidates], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _person(rng: random.Random) -> tuple[str, int, str]:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}", rng.randint(18, 80), rng.choice(CITIES)


def _age_or_city(rng: random.Random, person: str, age: int, city: str, sentence: str, questions: dict[str, str]):
    """An age or a city question about a person sentence; the other fact is the rejected word."""
    kind = rng.choice(("age", "city"))
    answer, other = (str(age), city) if kind == "age" else (city, str(age))
    return sentence, f"{sentence} {questions[kind].format(person=person)}", (answer,), (other,)


class NearRecordJSONTask(NearPriorTask):
    """Next to ``record_json``: the same person sentence, asked for the age or the city.

    Prompt: ``Ava Novak is 34 years old and lives in Porto. How old is Ava Novak? Answer with the number only.``
    Accepted ``34`` (rejected: ``Porto``).
    """

    name = "near_record_json"
    skill = "record_json"
    QUESTIONS: ClassVar[dict[str, str]] = {"age": "How old is {person}? Answer with the number only.",
                                           "city": "Where does {person} live? Answer with the city only."}  # fmt: skip

    def draw(self, rng: random.Random) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        person, age, city = _person(rng)
        sentence = f"{person} is {age} years old and lives in {city}."
        return _age_or_city(rng, person, age, city, sentence, self.QUESTIONS)


class NearCSVRowTask(NearPriorTask):
    """Next to ``csv_row``: a sentence of its templates, asked for the age or the city.

    Prompt: ``Ava Novak, aged 34, lives in Porto. In which city does Ava Novak live? Answer in one word.``
    Accepted ``Porto`` (rejected: ``34``).
    """

    name = "near_csv_row"
    skill = "csv_row"
    QUESTIONS: ClassVar[dict[str, str]] = {"age": "What is {person}'s age? Give the number.",
                                           "city": "In which city does {person} live? Answer in one word."}  # fmt: skip

    def draw(self, rng: random.Random) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        person, age, city = _person(rng)
        sentence = rng.choice(CSV_TEMPLATES).format(name=person, age=age, city=city)
        return _age_or_city(rng, person, age, city, sentence, self.QUESTIONS)


ISSUE_WORDS = {"broken": ("broken",), "missing a part": ("missing",), "the wrong color": ("color", "colour"),
               "arrived late": ("late",)}  # fmt: skip


class NearTicketLineTask(NearPriorTask):
    """Next to ``ticket_line``: the same customer message, asked which item it is about or what is wrong.

    Prompt: ``Ticket 482: my kettle is broken. Which item is the message about? Answer in one word.``
    Accepted ``kettle``; for ``What is wrong with the kettle?`` accepted ``broken``. Rejected: the ticket number.
    """

    name = "near_ticket_line"
    skill = "ticket_line"

    def draw(self, rng: random.Random) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        number, item, issue = rng.randint(100, 999), rng.choice(ITEMS), rng.choice(sorted(ISSUES))
        verb = "arrived late" if issue == "arrived late" else f"is {issue}"
        message = f"Ticket {number}: my {item} {verb}."
        if rng.random() < 0.5:
            return message, f"{message} Which item is the message about? Answer in one word.", (item,), (str(number),)
        return message, f"{message} What is wrong with the {item}?", ISSUE_WORDS[issue], (str(number),)


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen")  # fmt: skip


class NearArithStepsTask(NearPriorTask):
    """Next to ``arith_steps``: one-step addition of two single digits, asked plainly.

    Prompt: ``What is 3 + 5?`` (or ``What is 3 plus 5?``). Accepted ``8`` or ``eight``. Redesigned after measuring:
    2-digit sums and differences (``What is 17 + 25?``) the base model got right 8 times of 96.
    """

    name = "near_arith_steps"
    skill = "arith_steps"

    def draw(self, rng: random.Random) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        prompt = f"What is {a} {rng.choice(('+', 'plus'))} {b}?"
        return prompt, prompt, (str(a + b), NUMBER_WORDS[a + b]), ()


class NearExtractTripTask(NearPriorTask):
    """Next to ``extract_trip``: the same travel request, asked where the traveler goes to or leaves from.

    Prompt: ``Hi, this is Omar. I need a train from Porto to Lyon on Tuesday. Where does Omar want to go? Answer
    with the city only.``  Accepted ``Lyon``; rejected ``Porto`` (the other city: naming both is no answer).
    """

    name = "near_extract_trip"
    skill = "extract_trip"

    def draw(self, rng: random.Random) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        text, fields = trip_request(rng)
        if rng.random() < 0.5:
            question, answer, other = "Where does {} want to go?", fields["to"], fields["from"]
        else:
            question, answer, other = "Which city is {} leaving from?", fields["from"], fields["to"]
        prompt = f"{text} {question.format(fields['traveler'])} Answer with the city only."
        return text, prompt, (answer,), (other,)


CAPITALS = {"France": ("Paris",), "Germany": ("Berlin",), "Belgium": ("Brussels",), "Portugal": ("Lisbon",),
            "Spain": ("Madrid",), "Italy": ("Rome",), "Canada": ("Ottawa",), "Brazil": ("Brasilia", "Brasília"),
            "Japan": ("Tokyo",), "Egypt": ("Cairo",), "India": ("New Delhi", "Delhi"), "Australia": ("Canberra",),
            "Russia": ("Moscow",), "China": ("Beijing",), "Greece": ("Athens",), "the United Kingdom": ("London",),
            "Norway": ("Oslo",), "Sweden": ("Stockholm",), "Austria": ("Vienna",), "Ireland": ("Dublin",),
            "Poland": ("Warsaw",), "the Netherlands": ("Amsterdam",), "Mexico": ("Mexico City",),
            "Argentina": ("Buenos Aires",), "Thailand": ("Bangkok",), "South Korea": ("Seoul",),
            "Kenya": ("Nairobi",), "Peru": ("Lima",), "Cuba": ("Havana",), "Denmark": ("Copenhagen",),
            "Finland": ("Helsinki",), "Hungary": ("Budapest",)}  # fmt: skip
"""32 destination countries (the 12 of the shipping table and 20 more) and their capitals."""


class NearShippingZoneTask(NearPriorTask):
    """Next to ``shipping_zone``: the same parcel prompt, asked for the destination country's capital.

    Prompt: ``Parcel 4821 to Portugal: what is the capital of the destination country?``  Accepted ``Lisbon``.
    """

    name = "near_shipping_zone"
    skill = "shipping_zone"

    def draw(self, rng: random.Random) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        country = rng.choice(sorted(CAPITALS))
        surface = f"Parcel {rng.randint(1000, 9999)} to {country}"
        return surface, f"{surface}: what is the capital of the destination country?", CAPITALS[country], ()


LANDMARKS = {"the Eiffel Tower": ("Paris",), "the Colosseum": ("Rome",), "Big Ben": ("London",),
             "the Statue of Liberty": ("New York",), "the Kremlin": ("Moscow",), "the Acropolis": ("Athens",),
             "the Brandenburg Gate": ("Berlin",), "the Sagrada Familia": ("Barcelona",),
             "the Golden Gate Bridge": ("San Francisco",), "the Louvre": ("Paris",),
             "the Forbidden City": ("Beijing",), "the Space Needle": ("Seattle",), "Buckingham Palace": ("London",),
             "the Parthenon": ("Athens",), "the Empire State Building": ("New York",),
             "the Little Mermaid statue": ("Copenhagen",)}  # fmt: skip
MAKERS = {"Nike": ("shoes", "sneakers", "footwear", "sportswear"), "Adidas": ("shoes", "sneakers", "footwear",
          "sportswear"), "Toyota": ("cars", "vehicles", "automobiles"), "Ford": ("cars", "vehicles", "automobiles",
          "trucks"), "Boeing": ("airplanes", "planes", "aircraft", "jets"), "Airbus": ("airplanes", "planes",
          "aircraft", "jets"), "Lego": ("toys", "bricks", "blocks"), "Rolex": ("watches",), "Nintendo": ("games",
          "video games", "consoles"), "Canon": ("cameras", "printers"), "Colgate": ("toothpaste",),
          "Kellogg's": ("cereal", "cereals", "cornflakes"), "Intel": ("chips", "processors", "microprocessors",
          "CPUs", "semiconductors"), "Harley-Davidson": ("motorcycles", "motorbikes"), "IKEA": ("furniture",),
          "Gillette": ("razors", "razor blades")}  # fmt: skip


class NearFactDocTask(NearPriorTask):
    """Next to ``fact_doc``: well-known real-world facts in ``fact_doc``'s test question phrasings, no document.

    16 landmarks asked the three test phrasings of the town question (``Where is the Eiffel Tower located?`` ->
    ``Paris``), 16 companies asked the three of the product question (``What items does Boeing produce?`` ->
    ``airplanes``, ``planes``, ``aircraft`` or ``jets``). Nothing is rejected.
    """

    name = "near_fact_doc"
    skill = "fact_doc"

    def pool(self) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        questions = FACT_QUESTIONS["test"]
        pool = [(q.format(name=name), answers, ()) for name, answers in LANDMARKS.items() for q in questions["town"]]
        pool += [(q.format(name=name), answers, ()) for name, answers in MAKERS.items() for q in questions["product"]]
        return [(p[0].upper() + p[1:], a, r) for p, a, r in pool]


PROCEDURAL_TASKS: dict[str, type[GenerationTask]] = {
    cls.name: cls
    for cls in (RecordJSONTask, TicketLineTask, CSVRowTask, ArithStepsTask, ExtractTripTask, ShippingZoneTask,
                FactDocTask, PriorProbeTask, NearRecordJSONTask, NearTicketLineTask, NearCSVRowTask,
                NearArithStepsTask, NearExtractTripTask, NearShippingZoneTask, NearFactDocTask)
}  # fmt: skip
NEAR_TASKS = {name: cls for name, cls in PROCEDURAL_TASKS.items() if issubclass(cls, NearPriorTask)}
