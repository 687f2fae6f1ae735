"""Reading a continual run directory: ``results.json`` (schema in ``report.py``) and each stage's ``metrics.jsonl``.

results = load_results(Path("runs/demo"))     # shape-checked; errors are one line naming the file
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from selfdistill.errors import UserError

RESULTS_FILE = "results.json"


class ResultsError(UserError):
    """A ``results.json`` that cannot be read or has the wrong shape; the message names the file."""


def load_results(run_dir: Path) -> dict[str, Any]:
    """Read and shape-check ``run_dir/results.json``; errors are one line naming the file."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {run_dir} a continual run directory?)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(results, dict):
        raise ResultsError(f"{path}: expected a JSON object at the top level")
    for key, kind in (("stage_tasks", list), ("prior_tasks", list), ("methods", dict)):
        if not isinstance(results.setdefault(key, kind()), kind):
            raise ResultsError(f"{path}: field '{key}' must be a {'list' if kind is list else 'object'}")
    for name, method in results["methods"].items():
        stages = method.get("stages") if isinstance(method, dict) else None
        if not isinstance(stages, list) or not all(
            isinstance(s, dict) and isinstance(s.get("index"), int) for s in stages
        ):
            raise ResultsError(f"{path}: methods.{name}.stages must be a list of objects with an integer 'index'")
    return results


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; a missing file is empty and a torn line (a run still writing) is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return [row for row in rows if isinstance(row, dict)]


def stages_of(results: Mapping[str, Any], method: str) -> list[dict[str, Any]]:
    return sorted(results["methods"][method]["stages"], key=lambda stage: int(stage["index"]))


def stage_label(index: int, tasks: Sequence[str]) -> str:
    name = tasks[index - 1] if 0 < index <= len(tasks) else f"stage {index}"
    return "base" if index == 0 else f"after {name}"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def fmt_num(value: float, signed: bool = False) -> str:
    return "—" if not math.isfinite(value) else f"{value:+.3f}" if signed else f"{value:.3f}"
