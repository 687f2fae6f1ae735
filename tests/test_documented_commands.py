"""Every `selfdistill ...` command quoted in README.md and docs/*.md parses with today's CLI (nothing runs).

Flags are a promise: a renamed or dropped flag breaks the commands people copied from the docs, so the docs are
the test's data. Commands in a code block may continue over lines ending in a backslash.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from selfdistill.cli import COMMANDS, _parse, resolve

ROOT = Path(__file__).resolve().parents[1]
NAMES = "|".join(COMMANDS)
COMMAND = re.compile(rf"(?:^|[\s`(])(?:\.venv[-\w]*/bin/)?(?:-m )?selfdistill ((?:{NAMES})\b[^`#\n]*)")


def _documented() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continued lines
        for match in COMMAND.finditer(text):
            line = match.group(1).strip()
            line = line if line.endswith("...") else line.rstrip(".,;:)")
            found.append((f"{path.name}: selfdistill {line}", line))
    return found


DOCUMENTED = _documented()


def test_the_docs_quote_commands_of_every_kind():
    quoted = {line.split()[0] for _, line in DOCUMENTED}
    assert {"train", "eval", "probe", "continual", "report", "generate"} <= quoted, quoted


@pytest.mark.parametrize("line", [line for _, line in DOCUMENTED], ids=[where for where, _ in DOCUMENTED])
def test_documented_command_parses(line, tmp_path, monkeypatch):
    if re.search(r"\.\.\.|…|<|\[|\||\(", line) or "--help" in line:
        pytest.skip("a usage sketch or --help (tests/test_help_fast.py), not a command")
    words = shlex.split(line)
    if len(words) == 1:
        pytest.skip("the command named in prose, without its arguments")
    name, args = words[0], words[1:]
    monkeypatch.chdir(ROOT)  # paths in the docs are relative to the checkout (examples/...)
    config_cls = resolve(COMMANDS[name].config)
    try:
        _parse(name, config_cls, args)
    except ValueError as err:
        message = str(err)
        # a file or run directory the docs name that exists only after another documented command ran
        if re.search(r"(no such file|does not exist|not found|not a directory|no results)", message, re.I):
            pytest.skip(f"needs an earlier command's output: {message}")
        raise
