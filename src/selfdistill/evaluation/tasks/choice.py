"""Prior-capability tasks scored by log-likelihood of each choice, formatted as lm-evaluation-harness does.

    items = CHOICE_TASKS["arc_easy"](data_dir).test_items()

Each choice is a request ``(context, " " + choice)`` on raw text (no chat template); lm-eval's target delimiter is
a single space. ``acc`` picks the choice with the largest summed log-probability, ``acc_norm`` divides it by the
choice's length in characters (the delimiter not counted), exactly as lm-eval's ``multiple_choice`` scoring. Files
are read from ``<data_dir>/<dirname>/`` on first use; each directory's ``SOURCE.md`` documents the fields.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar

from selfdistill.evaluation.tasks.base import (
    ChoiceItem,
    ChoiceTask,
    LoglikRequest,
    LoglikResult,
    TaskError,
    read_jsonl_rows,
    task_dir,
)

DELIMITER = " "
"""lm-eval's default ``target_delimiter`` between context and choice."""

TRUTHFULQA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)
"""The TruthfulQA paper's 6-shot "QA primer", as lm-eval's truthfulqa_mc1/mc2 prepend it."""


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first index wins ties, as np.argmax


def _item(item_id: str, context: str, choices: list[str], gold: int, where: str, **kw: Any) -> ChoiceItem:
    if not 0 <= gold < len(choices):
        raise TaskError(f"{where}: gold index {gold} out of range for {len(choices)} choices")
    requests = tuple(LoglikRequest(context, DELIMITER + c) for c in choices)
    return ChoiceItem(id=item_id, requests=requests, gold=gold, **kw)


def _need(path: Path) -> Path:
    if not path.is_file():
        raise TaskError(f"{path}: file not found")
    return path


def _indices(path: Path) -> list[str]:
    return _need(path).read_text().split()


class _LoglikTask(ChoiceTask):
    """Lazy loading and the shared ``acc``/``acc_norm`` scoring; subclasses say where the data is and how to read it."""

    dirname: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]] = ("acc", "acc_norm")

    def __init__(self, data_dir: Path):
        super().__init__(Path(data_dir))
        self._items: list[ChoiceItem] | None = None

    def test_items(self) -> list[ChoiceItem]:
        if self._items is None:
            self._items = self.load(task_dir(self.data_dir, self.dirname))
        return self._items

    def load(self, root: Path) -> list[ChoiceItem]:
        raise NotImplementedError

    def score(self, item: ChoiceItem, results: list[LoglikResult]) -> dict[str, float]:
        lls = [r.logprob for r in results]
        lengths = [max(1, len(req.continuation) - len(DELIMITER)) for req in item.requests]
        values = {
            "acc": float(_argmax(lls) == item.gold),
            "acc_norm": float(_argmax([ll / n for ll, n in zip(lls, lengths, strict=True)]) == item.gold),
        }
        ordered = (self.primary_metric, *(m for m in self.metrics if m != self.primary_metric))
        return {m: values[m] for m in ordered}


def _query_choices_gold(path: Path, suffix: str) -> list[ChoiceItem]:
    """MosaicML gauntlet JSONL rows ``{query, choices, gold}``; the context is ``query + suffix``."""
    return [
        _item(str(i), row["query"] + suffix, row["choices"], int(row["gold"]), f"{path}:{i + 1}")
        for i, row in enumerate(read_jsonl_rows(path))
    ]


class ArcEasy(_LoglikTask):
    name = "arc_easy"
    primary_metric = "acc_norm"
    dirname = "arc_easy"

    def load(self, root: Path) -> list[ChoiceItem]:
        # query is "Question: <stem>" → lm-eval's "Question: {{question}}\nAnswer:"
        return _query_choices_gold(root / "arc_easy.jsonl", "\nAnswer:")


class ArcChallenge(_LoglikTask):
    name = "arc_challenge"
    primary_metric = "acc_norm"
    dirname = "arc_challenge"

    def load(self, root: Path) -> list[ChoiceItem]:
        return _query_choices_gold(root / "arc_challenge.jsonl", "\nAnswer:")


class Piqa(_LoglikTask):
    name = "piqa"
    primary_metric = "acc_norm"
    dirname = "piqa"

    def load(self, root: Path) -> list[ChoiceItem]:
        # query is "Question: <goal>\n" → lm-eval's "Question: {{goal}}\nAnswer:"
        return _query_choices_gold(root / "piqa.jsonl", "Answer:")


class OpenBookQA(_LoglikTask):
    name = "openbookqa"
    primary_metric = "acc_norm"
    dirname = "openbookqa"

    def load(self, root: Path) -> list[ChoiceItem]:
        return _query_choices_gold(root / "openbook_qa.jsonl", "")  # the bare stem, as lm-eval's doc_to_text


def _hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag ``preprocess`` (a no-op on most of klosax's already-cleaned text)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_context(line: str) -> str:
    """Approximate lm-eval's ``ctx_a + " " + ctx_b.capitalize()``: the dump joins ctx_b uncapitalized.

    ctx_b is the unfinished last sentence (ActivityNet items, e.g. "... grabs the pole. the lady"); when the text
    after the last ". " starts lower-case it is that ctx_b, so capitalize it as lm-eval does.
    """
    head, sep, tail = line.rpartition(". ")
    if sep and tail[:1].islower():
        line = head + sep + tail.capitalize()
    return _hellaswag_preprocess(line)


class HellaSwag(_LoglikTask):
    name = "hellaswag"
    primary_metric = "acc_norm"
    dirname = "hellaswag"

    def load(self, root: Path) -> list[ChoiceItem]:
        path = _need(root / "hellaswag_val_sub2000.txt")
        lines = path.read_text(encoding="utf-8").split("\n")
        ids = _indices(root / "hellaswag_val_sub2000.indices.txt")
        n = len(lines) // 6
        if n != len(ids):
            raise TaskError(f"{path}: {n} items but {len(ids)} indices in hellaswag_val_sub2000.indices.txt")
        items = []
        for k in range(n):
            query, gold, *endings = lines[6 * k : 6 * k + 6]
            context = _hellaswag_context(query)
            choices = [_hellaswag_preprocess(e) for e in endings]
            items.append(_item(ids[k], context, choices, int(gold), f"{path}:{6 * k + 1}"))
        return items


class WinoGrande(_LoglikTask):
    """Partial scoring: the choice is in the context, every choice shares the continuation after the blank."""

    name = "winogrande"
    primary_metric = "acc"
    dirname = "winogrande"
    metrics = ("acc",)

    def load(self, root: Path) -> list[ChoiceItem]:
        path = root / "winogrande.jsonl"
        items = []
        for i, row in enumerate(read_jsonl_rows(path)):
            gold = int(row["gold"])
            cont = DELIMITER + row["continuation"].strip()
            requests = tuple(LoglikRequest(ctx, cont) for ctx in row["context_options"])
            if not 0 <= gold < len(requests):
                raise TaskError(f"{path}:{i + 1}: gold index {gold} out of range")
            items.append(ChoiceItem(id=str(i), requests=requests, gold=gold))
        return items


class BoolQ(_LoglikTask):
    name = "boolq"
    primary_metric = "acc"
    dirname = "boolq"
    metrics = ("acc",)

    def load(self, root: Path) -> list[ChoiceItem]:
        path = root / "boolq_sub2000.jsonl"
        rows = read_jsonl_rows(path)
        ids = _indices(root / "boolq_sub2000.indices.txt")
        items = []
        for i, (row_id, row) in enumerate(zip(ids, rows, strict=True)):
            # lm-eval: "{{passage}}\nQuestion: {{question}}?\nAnswer:" — no "Passage: " label.
            passage = row["query"].removeprefix("Passage: ")
            items.append(_item(row_id, passage + "\nAnswer:", row["choices"], int(row["gold"]), f"{path}:{i + 1}"))
        return items


class MMLU(_LoglikTask):
    """lm-eval's default zero-shot MMLU (letters scored) on the balanced 35-per-subject subset."""

    name = "mmlu"
    primary_metric = "acc"
    dirname = "mmlu"
    metrics = ("acc",)

    def load(self, root: Path) -> list[ChoiceItem]:
        with _need(root / "test_subset_1995.tsv").open(encoding="utf-8") as f:
            wanted = [(r["subject"], int(r["row"])) for r in csv.DictReader(f, delimiter="\t")]
        tables: dict[str, list[dict[str, str]]] = {}
        items = []
        for subject, row in wanted:
            if subject not in tables:
                with _need(root / "test" / f"{subject}_test.csv").open(encoding="utf-8", newline="") as f:
                    tables[subject] = list(csv.DictReader(f))
            doc = tables[subject][row]
            choices = [doc[f"choice{k}"] for k in range(4)]
            context = (
                f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
                f"{doc['question'].strip()}\n"
                + "".join(f"{letter}. {c}\n" for letter, c in zip("ABCD", choices, strict=True))
                + "Answer:"
            )
            items.append(_item(f"{subject}/{row}", context, list("ABCD"), int(doc["answer"]), f"{subject}:{row}"))
        return items


def _truthfulqa_items(root: Path, targets: str) -> list[ChoiceItem]:
    path = root / "mc_task.json"
    items = []
    for i, doc in enumerate(json.loads(_need(path).read_text(encoding="utf-8"))):
        answers = list(doc[targets])
        labels = tuple(int(doc[targets][a]) for a in answers)
        context = f"{TRUTHFULQA_PRIMER}\n\nQ: {doc['question']}\nA:"
        items.append(_item(str(i), context, answers, labels.index(1), f"{path}[{i}]", labels=labels))
    return items


class TruthfulQAMC1(_LoglikTask):
    name = "truthfulqa_mc1"
    primary_metric = "acc"
    dirname = "truthfulqa"
    metrics = ("acc",)

    def load(self, root: Path) -> list[ChoiceItem]:
        return _truthfulqa_items(root, "mc1_targets")


class TruthfulQAMC2(_LoglikTask):
    """``acc`` = the probability mass on the true answers, normalized over all answers."""

    name = "truthfulqa_mc2"
    primary_metric = "acc"
    dirname = "truthfulqa"

    def load(self, root: Path) -> list[ChoiceItem]:
        return _truthfulqa_items(root, "mc2_targets")

    def score(self, item: ChoiceItem, results: list[LoglikResult]) -> dict[str, float]:
        lls = [r.logprob for r in results]
        top = max(lls)  # shift before exp: summed log-probs of long answers underflow
        probs = [math.exp(ll - top) for ll in lls]
        labels = item.labels or tuple(int(i == item.gold) for i in range(len(lls)))
        true_mass = sum(p for p, label in zip(probs, labels, strict=True) if label)
        return {"acc": true_mass / sum(probs)}


class Lambada(_LoglikTask):
    """Last-word prediction: one request per passage; ``acc`` = the word is the greedy continuation.

    ``logprob`` (the word's log-probability) is reported too; the evaluator turns its mean into lm-eval's
    ``perplexity`` = exp(-mean logprob).
    """

    name = "lambada"
    primary_metric = "acc"
    dirname = "lambada"

    def load(self, root: Path) -> list[ChoiceItem]:
        path = root / "lambada_openai_sub2000.jsonl"
        ids = _indices(root / "lambada_openai_sub2000.indices.txt")
        return [
            _item(row_id, row["context"], [row["continuation"]], 0, f"{path}:{i + 1}")
            for i, (row_id, row) in enumerate(zip(ids, read_jsonl_rows(path), strict=True))
        ]

    def score(self, item: ChoiceItem, results: list[LoglikResult]) -> dict[str, float]:
        (result,) = results
        return {"acc": float(result.is_greedy), "logprob": result.logprob}


CHOICE_TASKS: dict[str, type[ChoiceTask]] = {
    cls.name: cls
    for cls in (
        HellaSwag,
        ArcEasy,
        ArcChallenge,
        Piqa,
        WinoGrande,
        BoolQ,
        OpenBookQA,
        MMLU,
        TruthfulQAMC1,
        TruthfulQAMC2,
        Lambada,
    )
}
