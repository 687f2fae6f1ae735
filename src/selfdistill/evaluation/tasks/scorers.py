"""Named scorers for user tasks, and the answer extractors the built-in tasks share.

    SCORERS["number"]("... so she pays $1,250.", 1250)   # -> 1.0

A scorer is ``(output, answer) -> float`` in [0, 1]. ``answer`` may be a list of acceptable answers for every scorer
except ``json`` (where a list is a JSON value) and ``regex``; the output is right if it matches any of them.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize_text(text: str) -> str:
    """Casefold, collapse whitespace and drop surrounding quotes and final punctuation."""
    text = " ".join(str(text).split()).casefold()
    return text.strip(" \"'`*").rstrip(".!?;:").strip()


def code_blocks(text: str) -> list[str]:
    """Contents of the markdown code fences in ``text``, in order (an unclosed last fence counts too)."""
    blocks = _FENCE.findall(text)
    tail = text.rsplit("```", 1)
    if text.count("```") % 2 == 1 and len(tail) == 2:
        blocks.append(re.sub(r"^[\w+-]*[ \t]*\n", "", tail[1]))
    return blocks


# ---------------------------------------------------------------------------------------------------------------
# Extractors


def parse_number(text: str) -> float | None:
    """``"$1,250.00"`` -> 1250.0; None when ``text`` is not a number."""
    cleaned = str(text).strip().replace(",", "").replace("$", "").rstrip(".").strip()
    try:
        return float(cleaned)
    except ValueError:
        return None


def extract_number(output: str) -> float | None:
    """The final answer of a worked solution: the number after the last ``####``, else after the last "answer",
    else the last number in the text."""
    for marker in ("####", "answer is", "answer:"):
        at = output.lower().rfind(marker)
        if at >= 0 and (found := _NUMBER.search(output[at + len(marker) :])):
            return parse_number(found.group())
    numbers = _NUMBER.findall(output)
    return parse_number(numbers[-1]) if numbers else None


def numbers_equal(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def extract_choice(output: str, letters: str = "ABCD") -> str | None:
    """The letter an answer picks: "answer is (B)", "B.", "**B**", "(B) ..." or a bare "B"; None if unclear.

    A leading capital is taken only when it stands alone or is followed by ``.``, ``)`` or ``:``, so that an
    output such as "A molecule with ..." is not read as choice A.
    """
    cls = f"[{re.escape(letters)}]"
    explicit = re.findall(rf"(?i:answer)(?:\s+is)?\s*[:=]?\s*(?i:option\s+)?[\(\[*]*({cls})\b", output)
    if explicit:
        return explicit[-1]
    lead = re.match(rf"\s*(?i:option\s+)?[\(\[*]*({cls})(?:[\)\]*]*[.:)]|[\)\]*]*\s*$|\)|\*\*)", output)
    if lead:
        return lead.group(1)
    alone = re.findall(rf"(?:^|\n)\s*[\(\[*]*({cls})[\)\]*]*[.:)]?\s*(?:\n|$)", output)
    return alone[-1] if alone else None


def extract_json(output: str) -> tuple[bool, Any]:
    """The first JSON value in ``output`` (fenced or bare): ``(found, value)``."""
    decoder = json.JSONDecoder()
    for candidate in [*code_blocks(output), output]:
        stripped = candidate.strip()
        try:
            return True, json.loads(stripped)
        except json.JSONDecodeError:
            pass
        for i, ch in enumerate(stripped):
            if ch in "{[":
                try:
                    return True, decoder.raw_decode(stripped, i)[0]
                except json.JSONDecodeError:
                    continue
    return False, None


# ---------------------------------------------------------------------------------------------------------------
# Scorers: (output, answer) -> float


def _alternatives(answer: Any) -> list[Any]:
    return list(answer) if isinstance(answer, list | tuple) else [answer]


def score_exact(output: str, answer: Any) -> float:
    """Equal after :func:`normalize_text` (case, whitespace, quotes and final punctuation ignored)."""
    out = normalize_text(output)
    return float(any(out == normalize_text(a) for a in _alternatives(answer)))


def score_contains(output: str, answer: Any) -> float:
    """The normalized answer occurs in the normalized output."""
    out = normalize_text(output)
    return float(any(normalize_text(a) in out for a in _alternatives(answer) if normalize_text(a)))


def score_number(output: str, answer: Any) -> float:
    """The output's final number (see :func:`extract_number`) equals the answer (commas and ``$`` ignored)."""
    got = extract_number(output)
    if got is None:
        return 0.0
    golds = [parse_number(a) if not isinstance(a, int | float) else float(a) for a in _alternatives(answer)]
    return float(any(g is not None and numbers_equal(got, g) for g in golds))


def choice_letter(answer: Any) -> str:
    """A gold choice given as a letter (``"b"``) or a 0-based index (``1``) -> ``"B"``."""
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < 26:
        return chr(ord("A") + answer)
    if isinstance(answer, str) and re.fullmatch(r"\s*\(?[A-Za-z]\)?\s*", answer):
        return answer.strip(" ()").upper()
    raise ValueError(f"a choice answer must be a letter or a 0-based index, got {answer!r}")


def score_choice(output: str, answer: Any) -> float:
    """The letter the output picks (see :func:`extract_choice`) equals the gold letter or index."""
    golds = {choice_letter(a) for a in _alternatives(answer)}
    letters = "".join(chr(ord("A") + i) for i in range(max(4, max(ord(g) - ord("A") + 1 for g in golds))))
    return float(extract_choice(output, letters) in golds)


def score_json(output: str, answer: Any) -> float:
    """The first JSON value in the output equals the answer (a JSON value, or a string holding one)."""
    if isinstance(answer, str):
        with contextlib.suppress(json.JSONDecodeError):
            answer = json.loads(answer)
    found, value = extract_json(output)
    return float(found and value == answer)


def score_regex(output: str, answer: Any) -> float:
    """The answer is a regular expression that ``re.search`` finds in the output (write ``(?i)`` to ignore case)."""
    return float(any(re.search(str(a), output) is not None for a in _alternatives(answer)))


SCORERS: dict[str, Callable[[str, Any], float]] = {
    "exact": score_exact,
    "contains": score_contains,
    "number": score_number,
    "choice": score_choice,
    "json": score_json,
    "regex": score_regex,
}


def check_answer(scorer: str, answer: Any) -> str | None:
    """Why ``answer`` cannot be scored by ``scorer`` (a message), or None if it can."""
    alternatives = [answer] if scorer == "json" else _alternatives(answer)
    if not alternatives:
        return "'answer' is an empty list"
    for a in alternatives:
        if scorer == "number" and (isinstance(a, bool) or (not isinstance(a, int | float) and parse_number(a) is None)):
            return f"'answer' {a!r} is not a number (scorer 'number')"
        if scorer == "choice":
            try:
                choice_letter(a)
            except ValueError as err:
                return f"{err} (scorer 'choice')"
        if scorer == "regex":
            try:
                re.compile(str(a))
            except re.error as err:
                return f"'answer' {a!r} is not a valid regular expression ({err})"
        if scorer in ("exact", "contains") and isinstance(a, dict | list):
            return f"'answer' must be a string, number or list of them for scorer {scorer!r}"
    return None
