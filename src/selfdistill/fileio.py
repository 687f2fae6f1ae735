"""Small file writes that a kill cannot tear: a reader sees the old file or the new, never half of one.

Usage: ``write_json_atomic(out / "eval.json", scores)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a hidden temporary file beside ``path``, then rename it over ``path``: a reader (or a
    rerun after a kill) sees the old content or the new, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, value: Any, indent: int = 2) -> None:
    """``value`` as indented JSON with a final newline, written atomically (``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(value, indent=indent) + "\n")
