"""BFCL tool calling: function specs + a request -> one call, scored by AST match as the leaderboard does.

    task = BFCLTask(data_dir); ex = task.test_examples()[0]; task.score(ex, "math.factorial(number=5)")

A call is read from the output in Python syntax (``fn(a=1, b="x")``, also inside a markdown code fence, a
``[fn(...)]`` list, or amid prose) or in JSON (``{"name": fn, "arguments": {...}}``, or ``{fn: {...}}``). It is
right when the function name matches, every required parameter is given, every given parameter exists and is in
the ground truth, each value has the spec's type (an int is accepted where a float is expected, never a string
for a number) and equals one of the acceptable values (strings compared without case, spaces and ``,./-_*^``;
lists element-wise; dicts key by key), and every ground-truth parameter that may not be omitted (no ``""`` among
its acceptable values) is present. Positional arguments are not matched to parameters: such a call is wrong.
"""

from __future__ import annotations

import ast
import json
import random
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from selfdistill.data import Example
from selfdistill.evaluation.tasks.base import SplitTask, TaskError, read_jsonl_rows, task_dir
from selfdistill.evaluation.tasks.scorers import code_blocks

PROMPT = (
    "You can call these functions (JSON specs):\n{functions}\n\n"
    "Answer the request below with exactly one function call in Python syntax with keyword arguments, "
    "like func_name(param1=value1, param2=value2). Reply with the call only.\n\n"
    "Request: {question}"
)
_CALL_START = re.compile(r"[A-Za-z_][\w.]*\s*\(")
_BARE_NAMES = {"true": True, "false": False, "null": None, "none": None}


@dataclass
class Call:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    positional: int = 0


# ---------------------------------------------------------------------------------------------------------------
# Reading calls from text


def _value(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        if isinstance(node, ast.Name):  # a bare word: BFCL reads it as that string (true/null as JSON would)
            return _BARE_NAMES.get(node.id.lower(), node.id)
        return ast.unparse(node)


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def _from_ast(node: ast.expr) -> list[Call] | None:
    if isinstance(node, ast.List | ast.Tuple):
        calls = [_from_ast(e) for e in node.elts]
        return None if not calls or any(c is None or len(c) != 1 for c in calls) else [c[0] for c in calls]
    if not isinstance(node, ast.Call) or (name := _dotted(node.func)) is None:
        return None
    if any(kw.arg is None for kw in node.keywords):
        return None
    return [Call(name, {kw.arg: _value(kw.value) for kw in node.keywords}, len(node.args))]


def _from_json(value: Any) -> list[Call] | None:
    if isinstance(value, list):
        calls = [_from_json(v) for v in value]
        return None if not calls or any(c is None or len(c) != 1 for c in calls) else [c[0] for c in calls]
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("name"), str):
        args = value.get("arguments", value.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        return [Call(value["name"], args)] if isinstance(args, dict) else None
    if len(value) == 1 and isinstance(args := next(iter(value.values())), dict):
        return [Call(next(iter(value)), args)]
    return None


def _parse_whole(text: str) -> list[Call] | None:
    text = text.strip()
    if not text:
        return None
    if text[0] in "{[":
        try:
            if (calls := _from_json(json.loads(text))) is not None:
                return calls
        except json.JSONDecodeError:
            pass
    try:
        return _from_ast(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return None


def _closing(text: str, open_at: int) -> int | None:
    """Index of the bracket closing ``text[open_at]``, skipping brackets inside string literals."""
    depth, quote, i = 0, "", open_at
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _scan(text: str) -> list[tuple[int, Call]]:
    """Every call-shaped span in prose: Python calls and JSON objects, with their positions."""
    found: list[tuple[int, Call]] = []
    for m in _CALL_START.finditer(text):
        end = _closing(text, m.end() - 1)
        if end is not None and (calls := _parse_whole(text[m.start() : end + 1])):
            found.append((m.start(), calls[0]))
    decoder = json.JSONDecoder()
    for i in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            calls = _from_json(decoder.raw_decode(text, i)[0])
        except json.JSONDecodeError:
            continue
        if calls:
            found.append((i, calls[0]))
    return sorted(found, key=lambda pair: pair[0])


def parse_calls(output: str, names: tuple[str, ...] = ()) -> list[Call]:
    """The calls an output makes: a whole fenced block or the whole output read as calls (possibly several), else
    the first call found in prose, preferring one to a function in ``names``; empty when there is none."""
    for candidate in [*code_blocks(output), output]:
        if calls := _parse_whole(candidate):
            return calls
    found = [call for _, call in _scan(output)]
    preferred = [c for c in found if any(_same_name(c.name, n) for n in names)]
    return (preferred or found)[:1]


# ---------------------------------------------------------------------------------------------------------------
# Checking a call against the ground truth


def _same_name(got: str, want: str) -> bool:
    # Models that cannot emit dots write math_factorial for math.factorial; the leaderboard accepts that form.
    return got == want or got.replace(".", "_") == want.replace(".", "_")


def normalize_string(text: str) -> str:
    return re.sub(r"[\s,./\-_*^]", "", text).lower().replace("'", '"')


def _coerce(value: Any, spec: dict) -> Any:
    """Tuples to lists; ints to floats where the spec says float (Python's own int-to-float promotion)."""
    kind = spec.get("type")
    if isinstance(value, tuple):
        value = list(value)
    if kind == "float" and type(value) is int:
        return float(value)
    if isinstance(value, list) and isinstance(spec.get("items"), dict):
        return [_coerce(v, spec["items"]) for v in value]
    return value


def _type_ok(value: Any, spec: dict) -> bool:
    kind = spec.get("type")
    checks = {
        "integer": lambda v: type(v) is int,
        "float": lambda v: type(v) is float,
        "number": lambda v: type(v) in (int, float),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "dict": lambda v: isinstance(v, dict),
        "object": lambda v: isinstance(v, dict),
    }
    if kind in ("array", "tuple"):
        items = spec.get("items")
        return isinstance(value, list) and (not isinstance(items, dict) or all(_type_ok(v, items) for v in value))
    return checks.get(kind, lambda v: True)(value)


def _equal(value: Any, gold: Any) -> bool:
    if isinstance(gold, dict):  # a nested answer: {key: [acceptable values]}
        return (
            isinstance(value, dict)
            and all(k in gold for k in value)
            and all(_acceptable(value[k], acc) if k in value else "" in acc for k, acc in gold.items())
        )
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(gold, list):
        return isinstance(value, list) and len(value) == len(gold) and all(map(_equal, value, gold))
    if isinstance(gold, str):
        return isinstance(value, str) and normalize_string(value) == normalize_string(gold)
    if isinstance(gold, bool) or isinstance(value, bool):
        return value is gold
    if isinstance(gold, int | float):
        return isinstance(value, int | float) and float(value) == float(gold)
    return value == gold


def _acceptable(value: Any, acceptable: list) -> bool:
    # "" among the acceptable values means "may be omitted", not "an empty string is right".
    return any(_equal(value, gold) for gold in acceptable if not (isinstance(gold, str) and gold == ""))


def check_call(call: Call, ground_truth: dict, functions: list[dict]) -> str | None:
    """Why ``call`` does not match ``ground_truth`` (``{fn: {param: [acceptable]}}``), or None if it does."""
    gold_name, gold_params = next(iter(ground_truth.items()))
    if not _same_name(call.name, gold_name):
        return f"wrong function {call.name!r} (expected {gold_name!r})"
    if call.positional:
        return "positional arguments"
    spec = next(f for f in functions if f["name"] == gold_name)["parameters"]
    props = spec.get("properties", {})
    for name in spec.get("required", []):
        if name not in call.args:
            return f"missing required parameter {name!r}"
    for name, value in call.args.items():
        if name not in props or name not in gold_params:
            return f"unexpected parameter {name!r}"
        value = _coerce(value, props[name])
        if not _type_ok(value, props[name]):
            return f"parameter {name!r}: {type(value).__name__} is not of type {props[name].get('type')!r}"
        if not _acceptable(value, gold_params[name]):
            return f"parameter {name!r}: {value!r} is not an acceptable value"
    for name, acceptable in gold_params.items():
        if name not in call.args and "" not in acceptable:
            return f"missing parameter {name!r}"
    return None


def render_call(ground_truth: dict, required: tuple[str, ...] = ()) -> str:
    """The demonstration: ``fn(a=1, b='x')`` from the first acceptable value of each parameter, leaving out those
    whose list starts with ``""`` unless the spec requires them (one item, simple_python_200, says both)."""

    def first(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: first(acc[0]) for k, acc in value.items() if acc and acc[0] != ""}
        if isinstance(value, list):
            return [first(v) for v in value]
        return value

    name, params = next(iter(ground_truth.items()))
    given = {k: [a for a in acc if a != ""] if k in required else acc for k, acc in params.items()}
    args = ", ".join(f"{k}={first(acc[0])!r}" for k, acc in given.items() if acc and acc[0] != "")
    return f"{name}({args})"


# ---------------------------------------------------------------------------------------------------------------
# Tasks


class BFCLTask(SplitTask):
    """BFCL v4 ``simple_python`` (400 items, one function each): 200 train / 200 test.

    Split: item ids sorted by number, permuted with ``random.Random(0)``; the first half of the permutation is
    train, the rest test (each returned in id order). The demonstration is the ground-truth call rendered as
    ``fn(arg=value, ...)`` from the first acceptable value of each parameter (optional ones, whose list starts
    with ``""``, left out unless the spec requires them). Metric: ``acc`` (AST match, see the module docstring).
    """

    name = "bfcl"
    primary_metric = "acc"
    max_new_tokens = 128
    category: ClassVar[str] = "simple_python"
    train_fraction: ClassVar[float] = 0.5
    seed: ClassVar[int] = 0

    @cached_property
    def _examples(self) -> list[Example]:
        root = task_dir(self.data_dir, "bfcl")
        questions = read_jsonl_rows(root / f"BFCL_v4_{self.category}.json")
        answers = {
            r["id"]: r["ground_truth"]
            for r in read_jsonl_rows(root / "possible_answer" / f"BFCL_v4_{self.category}.json")
        }
        examples = []
        for q in sorted(questions, key=lambda r: int(r["id"].rsplit("_", 1)[1])):
            if q["id"] not in answers:
                raise TaskError(f"{root}: item {q['id']} has no ground truth")
            gold = answers[q["id"]][0]
            functions = "\n".join(json.dumps(f) for f in q["function"])
            turns = [dict(m) for m in q["question"][0]]
            turns[-1]["content"] = PROMPT.format(functions=functions, question=turns[-1]["content"])
            answer = {"ground_truth": gold, "functions": q["function"]}
            spec = next((f["parameters"] for f in q["function"] if f["name"] == next(iter(gold))), None)
            if spec is None:
                raise TaskError(f"{root}: item {q['id']}: the ground-truth function is not among its specs")
            demo = render_call(gold, tuple(spec.get("required", ())))
            examples.append(Example(tuple(turns), demo, None, answer, f"bfcl/{q['id']}"))
        return examples

    def load_splits(self) -> tuple[list[Example], list[Example]]:
        examples = self._examples
        order = random.Random(self.seed).sample(range(len(examples)), len(examples))
        train_ids = set(order[: round(self.train_fraction * len(examples))])
        train = [e for i, e in enumerate(examples) if i in train_ids]
        test = [e for i, e in enumerate(examples) if i not in train_ids]
        return train, test

    def score(self, example: Example, output: str) -> dict[str, float]:
        functions = example.answer["functions"]
        calls = parse_calls(output, tuple(f["name"] for f in functions))
        ok = len(calls) == 1 and check_call(calls[0], example.answer["ground_truth"], functions) is None
        return {"acc": float(ok)}


class BFCLMultipleTask(BFCLTask):
    """BFCL v4 ``multiple`` (200 items, 2-4 functions offered, one to call): test only, all items."""

    name = "bfcl_multiple"
    category = "multiple"
    train_fraction = 0.0

    def train_examples(self) -> list[Example]:
        return []
