"""Training/evaluation examples: read and validate JSONL files or Hugging Face datasets.

    examples = read_examples("data.jsonl")     # raises DataError("data.jsonl:3: missing field 'prompt'")

A row has ``prompt`` (a string or chat messages), a demonstration under ``completion`` (aliases
``demonstration``, ``response``), optional ``context`` (alias ``privileged_context``) that only the teacher sees,
and optional ``answer`` used for scoring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdistill.errors import UserError

ROLES = ("system", "user", "assistant", "tool")
COMPLETION_KEYS = ("completion", "demonstration", "response")
CONTEXT_KEYS = ("context", "privileged_context")
MAX_LINE_BYTES = 16 * 1024 * 1024


class DataError(UserError):
    """A bad input row or file; the message already reads ``where: what is wrong``."""


@dataclass(frozen=True)
class Example:
    messages: tuple[dict[str, str], ...]
    """The prompt as chat messages; a plain string prompt becomes one user turn."""
    completion: str | None = None
    """The demonstration (expert response)."""
    context: str | None = None
    """Privileged text only the teacher sees (a document, a hint)."""
    answer: Any = None
    """Reference for scoring."""
    source: str = ""
    """Where the row came from, ``file:line``, for error messages."""

    @property
    def question(self) -> str:
        """The last user turn: the part of the prompt teacher templates quote."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


def _messages(value: Any, where: str) -> tuple[dict[str, str], ...]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: field 'prompt' is an empty string")
        return ({"role": "user", "content": value},)
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field 'prompt' must be a string or a non-empty list of chat messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, Mapping):
            raise DataError(f"{where}: prompt[{i}] must be an object with 'role' and 'content'")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: prompt[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: prompt[{i}].content must be a string")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        raise DataError(f"{where}: prompt has no 'user' message")
    return tuple(out)


def _optional_text(row: Mapping, keys: Iterable[str], where: str) -> str | None:
    present = [k for k in keys if row.get(k) is not None]
    if len(present) > 1:
        raise DataError(f"{where}: fields {present} are aliases; give only one")
    if not present:
        return None
    value = row[present[0]]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{present[0]}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field '{present[0]}' is an empty string")
    return value


FIELDS = ("prompt", "completion", "context", "answer")


def parse_columns(spec: str | None) -> dict[str, str]:
    """``"prompt=question,completion=answer"`` -> ``{"prompt": "question", "completion": "answer"}``."""
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for part in spec.split(","):
        ours, sep, theirs = part.strip().partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ValueError(f"columns: {part.strip()!r} is not FIELD=COLUMN (e.g. prompt=question,completion=answer)")
        ours, theirs = ours.strip(), theirs.strip()
        if ours not in FIELDS:
            raise ValueError(f"columns: {ours!r} is not one of {', '.join(FIELDS)}")
        if ours in mapping:
            raise ValueError(f"columns: {ours!r} is mapped twice")
        mapping[ours] = theirs
    return mapping


def _renamed(row: Mapping, columns: Mapping[str, str], where: str) -> dict:
    """The row with our field names taken from the user's columns (the other columns stay as they are)."""
    out = dict(row)
    for ours, theirs in columns.items():
        if theirs not in row:
            raise DataError(f"{where}: no column {theirs!r} (mapped to {ours!r}); columns: {', '.join(map(str, row))}")
        for alias in {"completion": COMPLETION_KEYS, "context": CONTEXT_KEYS}.get(ours, (ours,)):
            if alias != theirs:
                out.pop(alias, None)  # the mapped column is the field; a same-named column would be a second one
        out[ours] = row[theirs]
    return out


def parse_row(
    row: Any, where: str, *, require_completion: bool = True, columns: Mapping[str, str] | None = None
) -> Example:
    """Validate one row (a decoded JSON object) into an Example, renaming ``columns`` first."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if columns:
        row = _renamed(row, columns, where)
    if "prompt" not in row:
        raise DataError(f"{where}: missing field 'prompt'")
    messages = _messages(row["prompt"], where)
    completion = _optional_text(row, COMPLETION_KEYS, where)
    if require_completion and completion is None:
        raise DataError(f"{where}: missing the demonstration (field 'completion', 'demonstration' or 'response')")
    context = _optional_text(row, CONTEXT_KEYS, where)
    return Example(messages, completion, context, row.get("answer"), where)


def read_jsonl(
    path: str | Path, *, require_completion: bool = True, columns: Mapping[str, str] | None = None
) -> list[Example]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    examples = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"{where}: line is {len(raw):,} bytes; the limit is {MAX_LINE_BYTES:,}")
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{where}: not valid UTF-8 (byte {err.start})") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg}, column {err.colno})") from None
            examples.append(parse_row(row, where, require_completion=require_completion, columns=columns))
    if not examples:
        raise DataError(f"{path}: no examples (file is empty)")
    return examples


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+){0,2}")
"""``org/name``, ``org/name:split`` or ``org/name:config:split``: a dataset on the Hugging Face hub."""


def is_hub_name(source: str) -> bool:
    """A hub dataset name, not a missing file (``data/train.jsonl`` is a path with a typo, not a dataset)."""
    return bool(HUB_NAME.fullmatch(source)) and not source.lower().endswith((".jsonl", ".json", ".csv", ".txt"))


def read_examples(
    source: str | Path,
    *,
    require_completion: bool = True,
    split: str = "train",
    columns: Mapping[str, str] | None = None,
) -> list[Example]:
    """Read a JSONL file, a saved Hugging Face dataset directory (``datasets.load_from_disk``), or a dataset on
    the hub by name (``org/name[:config][:split]``)."""
    path = Path(source)
    if path.is_dir():
        datasets = _datasets(str(path))
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (has {', '.join(ds)})")
            ds = ds[split]
        return _dataset_examples(ds, str(path), require_completion, columns)
    if not path.exists() and is_hub_name(str(source)):
        return _hub_examples(str(source), split, require_completion, columns)
    return read_jsonl(path, require_completion=require_completion, columns=columns)


def _datasets(where: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{where}: reading Hugging Face datasets needs `pip install datasets`") from None
    return datasets


def _dataset_examples(ds, where: str, require_completion: bool, columns) -> list[Example]:
    examples = [
        parse_row(row, f"{where}[{i}]", require_completion=require_completion, columns=columns)
        for i, row in enumerate(ds)
    ]
    if not examples:
        raise DataError(f"{where}: no examples (dataset is empty)")
    return examples


def _hub_examples(name: str, split: str, require_completion: bool, columns) -> list[Example]:
    """A hub dataset: one request first, so an unknown or unreachable name fails in seconds, not after retries."""
    from selfdistill.hub import hub_status

    repo, *rest = name.split(":")
    config, split = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0] if rest else split)
    datasets = _datasets(name)
    status = hub_status(repo, kind="datasets")
    if status == "missing":
        raise DataError(f"{name}: no such file, and no dataset {repo!r} on the hub (404)")
    if status == "unreachable":
        raise DataError(
            f"{name}: no such file, and the dataset hub cannot be reached (offline?); load it where the hub is "
            "reachable, `save_to_disk` it, and pass that directory"
        )
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except ValueError as err:  # e.g. an unknown split or config
        raise DataError(f"{name}: {str(err).splitlines()[0]}") from None
    return _dataset_examples(ds, name, require_completion, columns)
