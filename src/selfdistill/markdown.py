"""Markdown that reports, model cards and tracker text share: ``table(["task", "score"], [["arc_easy", "0.412"]])``."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub-flavoured markdown table as lines; cells are written as given (format numbers first)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
