"""Every benchmark command quoted in README.md, docs/*.md and the scripts' own docstrings parses with the script's
tyro config, and the benchmarks share helpers through modules, never through another script."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest
import tyro

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
# script → the dataclass its main() hands to tyro.cli
CONFIGS = {
    "budget": "Args",
    "decode_floor": "Args",
    "forgetting": "Args",
    "gpu_check": "Args",
    "kill_resume": "Args",
    "lm_eval_crosscheck": "CrossCheckConfig",
    "memory": "Args",
    "recipes": "Args",
    "rollout_speed": "Args",
    "select_near_prior": "Args",
    "step_time": "Args",
    "vllm_threads": "Args",
    "vs_trl": "Args",
}
# a command: the script run by a python, or given arguments (a bare path in prose is a mention, not a command)
SCRIPT = re.compile(r"(python\S*\s+)?benchmarks/(\w+)\.py\b([^#`\n]*)")


def _code(text: str) -> list[str]:
    """The code in a markdown text: lines of fenced blocks and inline code spans."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    outside = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return [line for block in fenced for line in block.splitlines()] + re.findall(r"`([^`\n]+)`", outside)


def quoted_commands() -> list[tuple[str, str, list[str]]]:
    """(where it is quoted, script, arguments) for every benchmark command in the docs and the usage docstrings."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for code in _code(doc.read_text(encoding="utf-8")):
            found += [(doc.name, m[2], shlex.split(m[3])) for m in SCRIPT.finditer(code) if m[1] or m[3].strip()]
    for name in CONFIGS:
        docstring = ast.get_docstring(ast.parse((BENCH / f"{name}.py").read_text(encoding="utf-8"))) or ""
        usage = [line for line in docstring.splitlines() if line.startswith("    ")]
        found += [(f"{name}.py", m[2], shlex.split(m[3])) for line in usage for m in SCRIPT.finditer(line)]
    return found


COMMANDS = quoted_commands()


@pytest.fixture(scope="module")
def scripts():
    """The scripts imported as modules (for their configs), dropped again afterwards."""
    before = set(sys.modules)
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in CONFIGS}
    finally:
        sys.path.remove(str(BENCH))
        for name in {p.stem for p in BENCH.glob("*.py")} - before:
            sys.modules.pop(name, None)


def test_the_docs_quote_every_script_and_only_scripts_that_exist():
    quoted = {script for _, script, _ in COMMANDS}
    assert quoted <= set(CONFIGS), "a quoted script has no entry here or does not exist"
    assert {"vs_trl", "memory", "step_time", "kill_resume", "gpu_check"} <= quoted
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(("where", "script", "argv"), COMMANDS, ids=[f"{w}:{s} {' '.join(a)}" for w, s, a in COMMANDS])
def test_a_quoted_command_parses(scripts, where, script, argv):
    config = getattr(scripts[script], CONFIGS[script])
    parsed = tyro.cli(config, args=argv)
    assert isinstance(parsed, config)


def test_the_options_keep_their_values(scripts):
    memory = tyro.cli(scripts["memory"].Args, args=shlex.split("--loss-only --head fused materialized --vocab 49152 1"))
    assert (memory.loss_only, memory.head, memory.vocab, memory.lengths) == (
        True,
        ["fused", "materialized"],
        [49152, 1],
        [32, 128],
    )
    step = tyro.cli(
        scripts["step_time"].Args, args=shlex.split("--compare prepack --precision fp32 --max-new-tokens 64")
    )
    arms, subject = scripts["step_time"].arms_of(step)
    assert arms == {"prepack": ("sdft", "fp32", {"prepack": "on"}), "stock": ("sdft", "fp32", {"prepack": "off"})}
    assert (step.max_new_tokens, subject) == (64, "sdft, precision fp32")
    trl = tyro.cli(scripts["vs_trl"].Args, args=["--quick", "--no-default-precision"])
    settings = scripts["vs_trl"].settings_of(trl)
    assert (settings["steps"], settings["new_tokens"], settings["sides"]) == (3, 16, ["trl", "selfdistill-fp32"])
    with pytest.raises(SystemExit):
        tyro.cli(scripts["gpu_check"].Args, args=["--shapes", "no-such-shape"])


def test_a_step_count_without_a_kept_step_is_a_usage_error(scripts, capsys):
    with pytest.raises(SystemExit) as e:
        scripts["vs_trl"].settings_of(tyro.cli(scripts["vs_trl"].Args, args=["--steps", "1"]))
    assert e.value.code == 2 and "--steps: at least 2" in capsys.readouterr().err


def _imports(tree: ast.Module) -> dict[str, set[str]]:
    """Benchmark module → the names this module takes from it (``from m import x`` and ``m.x``)."""
    local = {p.stem for p in BENCH.glob("*.py")}
    taken: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in local:
            taken.setdefault(node.module, set()).update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            taken.update({a.name: set() for a in node.names if a.name in local})
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # code run by a child (python -c)
            for module, names in re.findall(r"^from (\w+) import ([\w, ]+)$", node.value, flags=re.M):
                if module in local:
                    taken.setdefault(module, set()).update(n.strip() for n in names.split(","))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in taken:
            taken[node.value.id].add(node.attr)
    return taken


def test_scripts_share_through_modules_and_touch_no_private_name():
    for path in sorted(BENCH.glob("*.py")):
        taken = _imports(ast.parse(path.read_text(encoding="utf-8")))
        private = {f"{m}.{x}" for m, names in taken.items() for x in names if x.startswith("_")}
        assert not private, f"{path.name} uses another module's private names: {private}"
        # the recipe screen is defined over the forgetting benchmark's sequences, methods and plans
        allowed = {"forgetting"} if path.stem in ("recipes", "recipe_analysis") else set()
        assert set(taken) & set(CONFIGS) <= allowed, f"{path.name} imports a script: {set(taken) & set(CONFIGS)}"


def test_child_code_imports_only_the_standard_library_at_the_top():
    """The TRL venv and `python -c` children import these; they must not need selfdistill, yaml or tyro."""
    for name in ("measure", "step_harness", "trl_side"):
        tree = ast.parse((BENCH / f"{name}.py").read_text(encoding="utf-8"))
        top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        assert top - sys.stdlib_module_names - {"__future__"} <= {"measure", "step_harness"}, name


def test_every_benchmark_file_stays_within_400_lines():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in BENCH.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
