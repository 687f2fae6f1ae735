"""Prior capability the project measures offline: ``prior_probe`` (general questions) and the near-prior tasks
(``near_<skill>``: a skill's own prompt surface with a question the base model already answers).

    task = TASKS["near_record_json"](data_dir)   # data_dir is not used: the items are generated and selected

Both hold only items the embedded base model answers right, chosen by measuring it (greedy), so any drop after
training is capability lost. The near tasks' kept items live in ``near_prior.json`` beside this file, written by
``benchmarks/select_near_prior.py``; see ``procedural.py`` for the measured counts.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import ClassVar

from selfdistill.data import Example
from selfdistill.evaluation.tasks.base import GenerationTask, TaskError, user_turn
from selfdistill.evaluation.tasks.procedural import (
    CITIES,
    CSV_TEMPLATES,
    FACT_QUESTIONS,
    FIRST_NAMES,
    ISSUES,
    ITEMS,
    LAST_NAMES,
    SKILL_TASKS,
    _has_word,
    trip_request,
)

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
            Example(
                user_turn(f"{question} Answer in one short sentence."), None, None, list(answers), f"prior_probe/{i}"
            )
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
        skill = SKILL_TASKS[self.skill](self.data_dir)
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
            raise TaskError(
                f"{NEAR_PRIOR_FILE}: no selection for {self.name}'s current candidate pool; rerun "
                "benchmarks/select_near_prior.py"
            )
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
    QUESTIONS: ClassVar[dict[str, str]] = {
        "age": "How old is {person}? Answer with the number only.",
        "city": "Where does {person} live? Answer with the city only.",
    }

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
    QUESTIONS: ClassVar[dict[str, str]] = {
        "age": "What is {person}'s age? Give the number.",
        "city": "In which city does {person} live? Answer in one word.",
    }

    def draw(self, rng: random.Random) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        person, age, city = _person(rng)
        sentence = rng.choice(CSV_TEMPLATES).format(name=person, age=age, city=city)
        return _age_or_city(rng, person, age, city, sentence, self.QUESTIONS)


ISSUE_WORDS = {
    "broken": ("broken",),
    "missing a part": ("missing",),
    "the wrong color": ("color", "colour"),
    "arrived late": ("late",),
}


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


NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
)


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


CAPITALS = {
    "France": ("Paris",),
    "Germany": ("Berlin",),
    "Belgium": ("Brussels",),
    "Portugal": ("Lisbon",),
    "Spain": ("Madrid",),
    "Italy": ("Rome",),
    "Canada": ("Ottawa",),
    "Brazil": ("Brasilia", "Brasília"),
    "Japan": ("Tokyo",),
    "Egypt": ("Cairo",),
    "India": ("New Delhi", "Delhi"),
    "Australia": ("Canberra",),
    "Russia": ("Moscow",),
    "China": ("Beijing",),
    "Greece": ("Athens",),
    "the United Kingdom": ("London",),
    "Norway": ("Oslo",),
    "Sweden": ("Stockholm",),
    "Austria": ("Vienna",),
    "Ireland": ("Dublin",),
    "Poland": ("Warsaw",),
    "the Netherlands": ("Amsterdam",),
    "Mexico": ("Mexico City",),
    "Argentina": ("Buenos Aires",),
    "Thailand": ("Bangkok",),
    "South Korea": ("Seoul",),
    "Kenya": ("Nairobi",),
    "Peru": ("Lima",),
    "Cuba": ("Havana",),
    "Denmark": ("Copenhagen",),
    "Finland": ("Helsinki",),
    "Hungary": ("Budapest",),
}
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


LANDMARKS = {
    "the Eiffel Tower": ("Paris",),
    "the Colosseum": ("Rome",),
    "Big Ben": ("London",),
    "the Statue of Liberty": ("New York",),
    "the Kremlin": ("Moscow",),
    "the Acropolis": ("Athens",),
    "the Brandenburg Gate": ("Berlin",),
    "the Sagrada Familia": ("Barcelona",),
    "the Golden Gate Bridge": ("San Francisco",),
    "the Louvre": ("Paris",),
    "the Forbidden City": ("Beijing",),
    "the Space Needle": ("Seattle",),
    "Buckingham Palace": ("London",),
    "the Parthenon": ("Athens",),
    "the Empire State Building": ("New York",),
    "the Little Mermaid statue": ("Copenhagen",),
}
MAKERS = {
    "Nike": ("shoes", "sneakers", "footwear", "sportswear"),
    "Adidas": ("shoes", "sneakers", "footwear", "sportswear"),
    "Toyota": ("cars", "vehicles", "automobiles"),
    "Ford": ("cars", "vehicles", "automobiles", "trucks"),
    "Boeing": ("airplanes", "planes", "aircraft", "jets"),
    "Airbus": ("airplanes", "planes", "aircraft", "jets"),
    "Lego": ("toys", "bricks", "blocks"),
    "Rolex": ("watches",),
    "Nintendo": ("games", "video games", "consoles"),
    "Canon": ("cameras", "printers"),
    "Colgate": ("toothpaste",),
    "Kellogg's": ("cereal", "cereals", "cornflakes"),
    "Intel": ("chips", "processors", "microprocessors", "CPUs", "semiconductors"),
    "Harley-Davidson": ("motorcycles", "motorbikes"),
    "IKEA": ("furniture",),
    "Gillette": ("razors", "razor blades"),
}


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


PRIOR_TASKS: dict[str, type[GenerationTask]] = {
    cls.name: cls
    for cls in (
        PriorProbeTask,
        NearRecordJSONTask,
        NearTicketLineTask,
        NearCSVRowTask,
        NearArithStepsTask,
        NearExtractTripTask,
        NearShippingZoneTask,
        NearFactDocTask,
    )
}
NEAR_TASKS = {name: cls for name, cls in PRIOR_TASKS.items() if issubclass(cls, NearPriorTask)}
