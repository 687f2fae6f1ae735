"""Skills learned from demonstrations (generation tasks with train and test splits), and their registry.

    task = GENERATION_TASKS["gsm8k"](data_dir); task.score(task.test_examples()[0], "... #### 18")

Every split is fixed by the data or by a seeded permutation (``random.Random(0)``), documented on each class.
Examples carry a stable ``source`` id such as ``pubmedqa/21645374``.
"""

from __future__ import annotations

import collections
import json
import random
import re
from typing import ClassVar

from selfdistill.data import Example
from selfdistill.evaluation.tasks.base import (
    GenerationTask,
    SplitTask,
    TaskError,
    read_jsonl_rows,
    task_dir,
    user_turn,
)
from selfdistill.evaluation.tasks.bfcl import BFCLMultipleTask, BFCLTask
from selfdistill.evaluation.tasks.ifeval import IFEvalTask
from selfdistill.evaluation.tasks.scorers import extract_choice, extract_number, numbers_equal, parse_number

# ---------------------------------------------------------------------------------------------------------------
# GSM8K


def gsm8k_gold(solution: str) -> float:
    """The number after ``####`` in a GSM8K solution."""
    value = parse_number(solution.rsplit("####", 1)[-1])
    if "####" not in solution or value is None:
        raise TaskError(f"GSM8K solution without a '#### <number>' line: {solution[-80:]!r}")
    return value


class GSM8KTask(GenerationTask):
    """GSM8K grade-school math. Train: ``train_sub2000.jsonl`` (2,000 of 7,473 train items); test: ``test.jsonl``
    (1,319). The demonstration is the reference solution with its ``<<calc>>`` annotations removed, ending in
    ``#### <number>``. Metric ``acc``: the output's final number (after the last ``####``, else after "answer",
    else the last number; commas and ``$`` ignored) equals the gold number.
    """

    name = "gsm8k"
    primary_metric = "acc"
    max_new_tokens = 256
    PROMPT: ClassVar[str] = (
        "{question}\n\nSolve the problem step by step, then give the final answer on the last line as '#### <number>'."
    )

    def _load(self, filename: str) -> list[Example]:
        rows = read_jsonl_rows(task_dir(self.data_dir, "gsm8k") / filename)
        stem = filename.removesuffix(".jsonl")
        return [
            Example(
                user_turn(self.PROMPT.format(question=r["question"])),
                re.sub(r"<<[^>]*>>", "", r["answer"]),
                None,
                gsm8k_gold(r["answer"]),
                f"gsm8k/{stem}_{i}",
            )
            for i, r in enumerate(rows)
        ]

    def train_examples(self) -> list[Example]:
        return self._load("train_sub2000.jsonl")

    def test_examples(self) -> list[Example]:
        return self._load("test.jsonl")

    def score(self, example: Example, output: str) -> dict[str, float]:
        got = extract_number(output)
        return {"acc": float(got is not None and numbers_equal(got, example.answer))}


# ---------------------------------------------------------------------------------------------------------------
# PubMedQA

_DECISION = r"(yes|no|maybe)\b"


def extract_decision(output: str) -> str | None:
    """yes/no/maybe from "Answer: yes" (the last such marker), else from a leading or lone-line decision word."""
    marked = re.findall(rf"(?:answer|decision)\s*(?:is)?\s*[:\-]?\s*[*\"']*{_DECISION}", output, re.IGNORECASE)
    if marked:
        return marked[-1].lower()
    lead = re.match(rf"\W*{_DECISION}", output, re.IGNORECASE)
    if lead:
        return lead.group(1).lower()
    lone = re.findall(rf"(?:^|\n)\W*{_DECISION}\W*(?:\n|$)", output, re.IGNORECASE)
    return lone[-1].lower() if lone else None


class PubMedQATask(SplitTask):
    """PubMedQA PQA-L (1,000 expert-labeled items). Test: the 500 official test PMIDs (``test_ground_truth.json``);
    train: the other 500. The prompt is the abstract (labeled sections, no conclusion) and the question; the
    demonstration is the abstract's conclusion (``LONG_ANSWER``) then ``Answer: <decision>``. Metric ``acc``:
    the decision read from the output (see :func:`extract_decision`) equals the label; unreadable counts wrong.
    """

    name = "pubmedqa"
    primary_metric = "acc"
    max_new_tokens = 256
    PROMPT: ClassVar[str] = (
        "{context}\n\nQuestion: {question}\n\nExplain your reasoning briefly, then give the final answer on the "
        "last line as 'Answer: yes', 'Answer: no' or 'Answer: maybe'."
    )

    def load_splits(self) -> tuple[list[Example], list[Example]]:
        root = task_dir(self.data_dir, "pubmedqa")
        for name in ("ori_pqal.json", "test_ground_truth.json"):
            if not (root / name).is_file():
                raise TaskError(f"{root / name}: file not found")
        items = json.loads((root / "ori_pqal.json").read_text(encoding="utf-8"))
        test_ids = json.loads((root / "test_ground_truth.json").read_text(encoding="utf-8"))
        train, test = [], []
        for pmid, item in items.items():
            context = "\n".join(
                f"{label}: {text}" for label, text in zip(item["LABELS"], item["CONTEXTS"], strict=True)
            )
            prompt = self.PROMPT.format(context=context, question=item["QUESTION"])
            decision = item["final_decision"]
            demo = f"{item['LONG_ANSWER'].strip()}\nAnswer: {decision}"
            (test if pmid in test_ids else train).append(
                Example(user_turn(prompt), demo, None, decision, f"pubmedqa/{pmid}")
            )
        return train, test

    def score(self, example: Example, output: str) -> dict[str, float]:
        return {"acc": float(extract_decision(output) == example.answer)}


# ---------------------------------------------------------------------------------------------------------------
# SciKnowEval Chemistry L3


class SciKnowEvalChemTask(SplitTask):
    """SciKnowEval Chemistry L3, the five 4-choice files (2,100 items; the free-form balancing file is left out).

    Split: the distinct question texts (2,095; five repeat with other options) are permuted with
    ``random.Random(0)`` and taken into test until it holds 500 items, so a question never sits on both sides;
    the other 1,600 are train. The data has no explanations, so the demonstration is the answer letter alone.
    Metric ``acc``: the letter read from the output (see ``extract_choice``) equals ``answerKey``.
    """

    name = "sciknoweval_chem"
    primary_metric = "acc"
    max_new_tokens = 32
    num_test: ClassVar[int] = 500
    FILES: ClassVar[tuple[str, ...]] = (
        "molar_weight_calculation",
        "molecular_property_calculation",
        "molecule_structure_prediction",
        "reaction_prediction",
        "retrosynthesis",
    )

    def load_splits(self) -> tuple[list[Example], list[Example]]:
        root = task_dir(self.data_dir, "sciknoweval_chem_l3")
        rows: list[tuple[str, Example]] = []  # (question text without options, example)
        for stem in self.FILES:
            for i, r in enumerate(read_jsonl_rows(root / f"{stem}.jsonl")):
                if r["type"] != "mcq-4-choices":
                    continue
                options = "\n".join(
                    f"{k}. {t}" for k, t in zip(r["choices"]["label"], r["choices"]["text"], strict=True)
                )
                prompt = f"{r['prompt']['default']}\n\nQuestion: {r['question']}\n{options}\nAnswer:"
                example = Example(
                    user_turn(prompt), r["answerKey"], None, r["answerKey"], f"sciknoweval_chem/{stem}_{i}"
                )
                rows.append((r["question"], example))
        questions = sorted({q for q, _ in rows})
        random.Random(0).shuffle(questions)
        sizes = collections.Counter(q for q, _ in rows)
        test_questions: set[str] = set()
        taken = 0
        for q in questions:
            if taken >= self.num_test:
                break
            test_questions.add(q)
            taken += sizes[q]
        train = [e for q, e in rows if q not in test_questions]
        test = [e for q, e in rows if q in test_questions]
        return train, test

    def score(self, example: Example, output: str) -> dict[str, float]:
        return {"acc": float(extract_choice(output) == example.answer)}


# ---------------------------------------------------------------------------------------------------------------
# Fictional knowledge


def _norm_words(text: str) -> str:
    """Lowercase words without punctuation or articles: "The Zorgon–Calidus government." -> "zorgon calidus
    government"."""
    words = re.sub(r"[\W_]+", " ", text.lower()).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def probe_scores(prompt_input: str, target: str, output: str) -> dict[str, float]:
    """``acc_strict``: the continuation starts with the target; ``acc_lenient``: the target occurs in it.

    Both compare lowercase words without punctuation or articles, after dropping an echo of the probe's input.
    """
    out, given, gold = _norm_words(output), _norm_words(prompt_input), _norm_words(target)
    if given and out.startswith(given):
        out = out[len(given) :].strip()
    strict = out == gold or out.startswith(gold + " ")
    lenient = f" {gold} " in f" {out} "
    return {"acc_lenient": float(lenient), "acc_strict": float(strict)}


class FictionalKnowledgeTask(GenerationTask):
    """Fictional Knowledge: 130 invented documents, each with 5 memorization, 5 paraphrase (semantic
    generalization) and 5 compositional probes; a probe is a sentence cut before a short target span.

    Train: the 650 memorization probes, each with its document as the teacher's ``context`` and the target as the
    demonstration. Test (this task): the 650 paraphrase probes, which ask for the same targets in other words, so
    a gain measures learned facts rather than memorized wording. ``fictional_knowledge_mem`` (the training probes)
    and ``fictional_knowledge_hard`` (compositional) report the other two probe types separately.

    Metrics: ``acc_lenient`` (primary: the target's words occur in the greedy continuation; chat models wrap the
    span in a phrase, and the 32-token budget bounds guessing) and ``acc_strict`` (the continuation starts with
    the target), both on lowercase words without punctuation or articles, after dropping an echoed input.
    """

    name = "fictional_knowledge"
    primary_metric = "acc_lenient"
    max_new_tokens = 32
    probe: ClassVar[str] = "gen"
    # A fill-in-the-blank question: asked to "continue the text", the 135M chat model echoes the probe instead.
    PROMPT: ClassVar[str] = "{text} ___\n\nWhat words fill the blank? Answer with the words only."

    def _probes(self, kind: str) -> list[Example]:
        path = task_dir(self.data_dir, "fictional_knowledge") / "fictional_knowledge.json"
        if not path.is_file():
            raise TaskError(f"{path}: file not found")
        docs = json.loads(path.read_text(encoding="utf-8"))
        return [
            Example(
                user_turn(self.PROMPT.format(text=text)),
                target,
                doc["train_context"],
                [text, target],
                f"fictional_knowledge/doc{d}_{kind}{j}",
            )
            for d, doc in enumerate(docs)
            for j, (text, target) in enumerate(zip(doc[f"{kind}_input"], doc[f"{kind}_target"], strict=True))
        ]

    def train_examples(self) -> list[Example]:
        return self._probes("mem")

    def test_examples(self) -> list[Example]:
        return self._probes(self.probe)

    def score(self, example: Example, output: str) -> dict[str, float]:
        text, target = example.answer
        return probe_scores(text, target, output)


class FictionalKnowledgeMemTask(FictionalKnowledgeTask):
    """The 650 memorization probes (the training prompts themselves), test only."""

    name = "fictional_knowledge_mem"
    probe = "mem"

    def train_examples(self) -> list[Example]:
        return []


class FictionalKnowledgeHardTask(FictionalKnowledgeTask):
    """The 650 compositional probes, which need facts combined, test only."""

    name = "fictional_knowledge_hard"
    probe = "hard_gen"

    def train_examples(self) -> list[Example]:
        return []


GENERATION_TASKS: dict[str, type[GenerationTask]] = {
    "bfcl": BFCLTask,
    "bfcl_multiple": BFCLMultipleTask,
    "pubmedqa": PubMedQATask,
    "sciknoweval_chem": SciKnowEvalChemTask,
    "fictional_knowledge": FictionalKnowledgeTask,
    "fictional_knowledge_mem": FictionalKnowledgeMemTask,
    "fictional_knowledge_hard": FictionalKnowledgeHardTask,
    "gsm8k": GSM8KTask,
    "ifeval": IFEvalTask,
}
