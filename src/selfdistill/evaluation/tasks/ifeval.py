"""IFEval: generate a response, then verify each verifiable instruction in it (Zhou et al. 2023).

    task = IFEvalTask(data_dir); task.score(task.test_examples()[0], response)

The checkers are written here, following the published definitions of the 25 instruction types, because no PyPI
checker works offline: all of them (lm-eval's ifeval, if-verifiable) load NLTK's ``punkt`` data, which is not on
PyPI. Two deliberate differences from the reference code, both only in tokenization:

- sentences (``length_constraints:number_sentences``) are split by a regular expression: after ``.``, ``!`` or
  ``?`` (and closing quotes or brackets) followed by whitespace, except after common abbreviations and initials;
- words for ``change_case:capital_word_frequency`` are runs of word characters joined by ``-``, ``'`` or ``.``
  (NLTK's word tokenizer splits "I'm" into "I" and "'m"; here it stays one, non-capital, word).

The three language checks (``language:response_language``, ``change_case:english_capital``,
``change_case:english_lowercase``) use ``langdetect``, as the reference does; without it installed they are
counted as unsupported. Unsupported instruction ids are never silently dropped: ``score`` reports how many of a
prompt's instructions it could not check (``num_unsupported``), and accuracies are over the checked ones.

Strict: the response as it is. Loose: the instruction passes if any of 8 variants passes — the response with
its first line, its last line, or both removed, each with and without ``*`` characters.
"""

from __future__ import annotations

import collections
import json
import math
import re
from collections.abc import Callable
from functools import cached_property
from typing import Any

from selfdistill.data import Example
from selfdistill.evaluation.tasks.base import GenerationTask, read_jsonl_rows, task_dir, user_turn

try:
    import langdetect

    langdetect.DetectorFactory.seed = 0  # langdetect samples; fix it so a score is reproducible
except ImportError:  # pragma: no cover - depends on the environment
    langdetect = None

Checker = Callable[[str, dict[str, Any]], bool]
LANGUAGE_IDS = frozenset({"language:response_language", "change_case:english_capital", "change_case:english_lowercase"})
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "no",
        "fig",
        "al",
        "inc",
        "ltd",
    }
    | {"co", "corp", "mt", "ft", "approx", "dept", "est", "u.s", "a.m", "p.m"}
)


# ---------------------------------------------------------------------------------------------------------------
# Text helpers


def split_sentences(text: str) -> list[str]:
    """Sentences: cut after terminal punctuation followed by whitespace, not after abbreviations or initials."""
    sentences, start = [], 0
    for m in re.finditer(r"[.!?]+[\"')\]]*(?=\s)", text):
        before = text[start : m.start()].split()
        last = before[-1].lower().rstrip(".") if before else ""
        if m.group().startswith(".") and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
            continue
        if text[start : m.end()].strip():
            sentences.append(text[start : m.end()].strip())
        start = m.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def count_words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def _compare(count: int, relation: str, target: int) -> bool:
    # The data's relations are "less than" and "at least"; anything else is treated as "at least", as the
    # reference does.
    return count < target if relation == "less than" else count >= target


def _language(text: str) -> str | None:
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:  # no features (e.g. only digits): the reference counts it as a pass
        return None


# ---------------------------------------------------------------------------------------------------------------
# Checkers: (response, kwargs) -> followed?


def _two_responses(r: str, kw: dict) -> bool:
    parts = r.split("******")
    if any(not p.strip() for p in parts[1:-1]):
        return False
    answers = [p.strip() for p in parts if p.strip()]
    return len(answers) == 2 and answers[0] != answers[1]


def _postscript(r: str, kw: dict) -> bool:
    marker = kw["postscript_marker"].strip().lower()
    patterns = {"p.s.": r"\s*p\.\s?s\..*$", "p.p.s": r"\s*p\.\s?p\.\s?s.*$"}
    pattern = patterns.get(marker, r"\s*" + re.escape(marker) + r".*$")
    return bool(re.findall(pattern, r.lower(), flags=re.MULTILINE))


def _json_format(r: str, kw: dict) -> bool:
    text = r.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    try:
        json.loads(text.removesuffix("```").strip())
    except ValueError:
        return False
    return True


def _multiple_sections(r: str, kw: dict) -> bool:
    parts = re.split(r"\s?" + re.escape(kw["section_spliter"]) + r"\s?\d+\s?", r)
    return len(parts) - 1 >= kw["num_sections"]


def _bullets(r: str, kw: dict) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    return len(stars) + len(dashes) == kw["num_bullets"]


def _highlights(r: str, kw: dict) -> bool:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", r) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", r) if h[2:-2].strip()]
    return len(single) + len(double) >= kw["num_highlights"]


def _paragraphs(r: str, kw: dict) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", r)
    if any(not p.strip() for p in parts[1:-1]):
        return False
    return sum(1 for p in parts if p.strip()) == kw["num_paragraphs"]


def _nth_paragraph_first_word(r: str, kw: dict) -> bool:
    parts = r.split("\n\n")
    count, n = sum(1 for p in parts if p.strip()), kw["nth_paragraph"]
    if n > count or n > len(parts) or not parts[n - 1].strip():
        return False
    word = parts[n - 1].split()[0].lstrip("'\"")
    first = re.match(r"[^.,?!'\"]*", word).group().lower()
    return count == kw["num_paragraphs"] and first == kw["first_word"].lower()


def _capital_words(r: str, kw: dict) -> bool:
    words = re.findall(r"\w+(?:[-'.]\w+)*", r)
    return _compare(sum(w.isupper() for w in words), kw["capital_relation"], kw["capital_frequency"])


def _in_language(r: str, language: str) -> bool:
    found = _language(r)
    return found is None or found == language


CHECKERS: dict[str, Checker] = {
    "change_case:capital_word_frequency": _capital_words,
    "change_case:english_capital": lambda r, kw: r.isupper() and _in_language(r, "en"),
    "change_case:english_lowercase": lambda r, kw: r.islower() and _in_language(r, "en"),
    "combination:repeat_prompt": lambda r, kw: r.strip().lower().startswith(kw["prompt_to_repeat"].strip().lower()),
    "combination:two_responses": _two_responses,
    "detectable_content:number_placeholders": lambda r, kw: len(re.findall(r"\[.*?\]", r)) >= kw["num_placeholders"],
    "detectable_content:postscript": _postscript,
    "detectable_format:constrained_response": lambda r, kw: any(
        f"My answer is {a}." in r.strip() for a in ("yes", "no", "maybe")
    ),
    "detectable_format:json_format": _json_format,
    "detectable_format:multiple_sections": _multiple_sections,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:title": lambda r, kw: any(
        t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r)
    ),
    "keywords:existence": lambda r, kw: all(re.search(re.escape(k), r, re.IGNORECASE) for k in kw["keywords"]),
    "keywords:forbidden_words": lambda r, kw: (
        not any(re.search(r"\b" + re.escape(w) + r"\b", r, re.IGNORECASE) for w in kw["forbidden_words"])
    ),
    "keywords:frequency": lambda r, kw: _compare(
        len(re.findall(re.escape(kw["keyword"]), r, re.IGNORECASE)), kw["relation"], kw["frequency"]
    ),
    "keywords:letter_frequency": lambda r, kw: _compare(
        collections.Counter(r.lower())[kw["letter"].lower()], kw["let_relation"], kw["let_frequency"]
    ),
    "language:response_language": lambda r, kw: _in_language(r, kw["language"]),
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:number_sentences": lambda r, kw: _compare(
        len(split_sentences(r)), kw["relation"], kw["num_sentences"]
    ),
    "length_constraints:number_words": lambda r, kw: _compare(count_words(r), kw["relation"], kw["num_words"]),
    "punctuation:no_comma": lambda r, kw: "," not in r,
    "startend:end_checker": lambda r, kw: r.strip().strip('"').lower().endswith(kw["end_phrase"].strip().lower()),
    "startend:quotation": lambda r, kw: len(r.strip()) > 1 and r.strip()[0] == r.strip()[-1] == '"',
}


def is_supported(instruction_id: str) -> bool:
    return instruction_id in CHECKERS and (langdetect is not None or instruction_id not in LANGUAGE_IDS)


def loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    cut = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return cut + [c.replace("*", "") for c in cut]


def check_instruction(instruction_id: str, kwargs: dict[str, Any], response: str) -> tuple[bool, bool]:
    """``(strict, loose)`` for one supported instruction."""
    check = CHECKERS[instruction_id]
    strict = bool(response.strip()) and check(response, kwargs)
    loose = strict or any(v.strip() and check(v, kwargs) for v in loose_variants(response))
    return strict, bool(loose)


# ---------------------------------------------------------------------------------------------------------------
# The task


class IFEvalTask(GenerationTask):
    """IFEval, 541 prompts with 834 verifiable instructions of 25 types; test only.

    Metrics per prompt: ``inst_strict`` / ``inst_loose`` (share of its checked instructions followed),
    ``prompt_strict`` / ``prompt_loose`` (all of them followed), ``num_checked`` and ``num_unsupported``
    (instructions checked, and those whose id has no checker here). A prompt with nothing checkable reports the
    counts only, so a mean over items leaves it out of the accuracies. The mean of ``inst_*`` over prompts weights
    prompts equally; :meth:`aggregate` gives the instruction-level accuracy of the paper (each instruction
    weighted equally) and the total count of unsupported instructions.
    """

    name = "ifeval"
    primary_metric = "inst_strict"
    max_new_tokens = 512  # many prompts ask for 300+ words; a shorter budget fails them for length alone

    @cached_property
    def _examples(self) -> list[Example]:
        path = task_dir(self.data_dir, "ifeval") / "input_data.jsonl"
        examples = []
        for row in read_jsonl_rows(path):
            answer = {"instruction_id_list": row["instruction_id_list"], "kwargs": row["kwargs"]}
            examples.append(Example(user_turn(row["prompt"]), None, None, answer, f"ifeval/{row['key']}"))
        return examples

    def test_examples(self) -> list[Example]:
        return self._examples

    def instruction_results(
        self, example: Example, output: str
    ) -> list[tuple[str, bool, bool] | tuple[str, None, None]]:
        """Per instruction: ``(id, strict, loose)``, with ``None`` where the id is unsupported."""
        results: list[Any] = []
        for inst, kwargs in zip(example.answer["instruction_id_list"], example.answer["kwargs"], strict=True):
            clean = {k: v for k, v in (kwargs or {}).items() if v is not None}
            results.append(
                (inst, *check_instruction(inst, clean, output)) if is_supported(inst) else (inst, None, None)
            )
        return results

    def score(self, example: Example, output: str) -> dict[str, float]:
        results = self.instruction_results(example, output)
        checked = [(s, lo) for _, s, lo in results if s is not None]
        n = len(checked)
        counts = {"num_checked": float(n), "num_unsupported": float(len(results) - n)}
        if not n:  # nothing checkable: no accuracy at all, so a mean over items leaves this one out of it
            return counts
        return {
            "inst_strict": sum(s for s, _ in checked) / n,
            "inst_loose": sum(lo for _, lo in checked) / n,
            "prompt_strict": float(all(s for s, _ in checked)),
            "prompt_loose": float(all(lo for _, lo in checked)),
        } | counts

    @staticmethod
    def aggregate(scores: list[dict[str, float]]) -> dict[str, float]:
        """Instruction-level accuracy (each checked instruction weighs one) and prompt-level accuracy (over prompts
        with at least one checked instruction), with the counts of checked and unsupported instructions."""
        rows = [s for s in scores if s["num_checked"] > 0]
        n_inst = sum(s["num_checked"] for s in rows)
        out = {
            key: sum(s[key] * s["num_checked"] for s in rows) / n_inst if n_inst else math.nan
            for key in ("inst_strict", "inst_loose")
        }
        for key in ("prompt_strict", "prompt_loose"):
            out[key] = sum(s[key] for s in rows) / len(rows) if rows else math.nan
        out["num_checked"] = n_inst
        out["num_unsupported"] = sum(s["num_unsupported"] for s in scores)
        return out
