"""The frontier chart and the "best within budget" table, on hand-made evaluation points."""

import subprocess
import sys

import pytest

from selfdistill.continual.budget import EvalPoint, baseline
from selfdistill.continual.frontier import (
    FrontierRun,
    best_within_budget,
    best_within_budget_table,
    guard_retained,
    plot_frontier,
)

BASE = baseline({"near": 0.9, "prior": 1.0}, {"near": 1 / 24, "prior": 1 / 24})


def _run(setting, seed, path, **extra):
    """``path``: (step, selection, near, prior) per point."""
    points = tuple(EvalPoint(step, sel, {"near": near, "prior": prior}) for step, sel, near, prior in path)
    return FrontierRun(f"{setting}@seed{seed}", setting, seed, points, BASE, **extra)


RUNS = [
    # sft learns by step 6 and loses its neighbours by step 9
    _run("sft", 0, [(0, 0.0, 0.9, 1.0), (3, 0.5, 0.9, 1.0), (6, 1.0, 0.875, 1.0), (9, 1.0, 0.2, 1.0)]),
    _run("sft", 1, [(0, 0.0, 0.9, 1.0), (3, 0.8, 0.9, 0.96), (6, 1.0, 0.5, 1.0)]),
    # sdft learns less and keeps everything
    _run("sdft", 0, [(0, 0.0, 0.9, 1.0), (3, 0.25, 0.9, 1.0), (6, 0.5, 0.92, 1.0)]),
    _run("sdft", 1, [(0, 0.0, 0.9, 1.0), (3, 0.4, 0.9, 1.0), (6, 0.3, 0.9, 1.0)]),
]


def test_guard_retained_is_one_minus_the_mean_clipped_drop():
    assert guard_retained(EvalPoint(0, 0.0, {"near": 0.9, "prior": 1.0}), BASE) == pytest.approx(1.0)
    assert guard_retained(EvalPoint(9, 1.0, {"near": 0.2, "prior": 1.0}), BASE) == pytest.approx(1 - 0.35)
    assert guard_retained(EvalPoint(6, 0.5, {"near": 0.95, "prior": 0.9}), BASE) == pytest.approx(1 - 0.05)


def test_best_within_budget_keeps_per_seed_what_the_rule_allows():
    best = best_within_budget(RUNS, 0.05)
    assert best["sft"]["kept"] == {0: 6, 1: 3}  # seed 1's step 6 lost 0.4 of near
    assert best["sft"]["selection"] == {0: 1.0, 1: 0.8}
    assert best["sft"]["mean_drop"][0] == pytest.approx(0.0125)
    assert best["sft"]["worst_drop"][1] == pytest.approx(0.04)
    assert best["sdft"]["kept"] == {0: 6, 1: 3}
    assert "test_selection" not in best["sft"]


def test_the_table_has_mean_std_and_paired_intervals_against_the_first_setting():
    lines = best_within_budget_table(RUNS, 0.05)
    text = "\n".join(lines)
    assert lines[0].startswith("Best within a forgetting budget of 0.05")
    assert "| setting | seeds | kept steps | selection |" in text and "Δ selection vs sft [95% CI]" in text
    sft = next(line for line in lines if line.startswith("| sft |"))
    sdft = next(line for line in lines if line.startswith("| sdft |"))
    assert "| 2 | 6, 3 | 0.900 ± 0.141 |" in sft and sft.endswith("| — |")
    # sdft − sft by seed: 0.5 − 1.0 and 0.4 − 0.8, mean −0.45, std 0.0707, t(1) = 12.706: ±0.635
    assert sdft.endswith("| -0.450 [-1.085, +0.185] |")


def test_test_side_numbers_appear_where_the_kept_model_was_tested():
    test_base = baseline({"near": 0.85, "prior": 1.0}, {"near": 1 / 24, "prior": 1 / 24})
    tested = _run(
        "sft",
        0,
        [(0, 0.0, 0.9, 1.0), (6, 1.0, 0.9, 1.0)],
        test=EvalPoint(6, 0.96, {"near": 0.75, "prior": 1.0}),
        test_base=test_base,
    )
    best = best_within_budget([tested], 0.05)
    assert best["sft"]["test_selection"] == {0: 0.96}
    assert best["sft"]["test_mean_drop"][0] == pytest.approx(0.05)
    lines = best_within_budget_table([tested], 0.05)
    assert "test selection | test guard drop" in lines[2]
    assert lines[-1] == "| sft | 1 | 6 | 1.000 | 0.000 | 0.000 | 0.960 | 0.050 |"


def test_the_frontier_is_a_png_with_every_run(tmp_path):
    path = tmp_path / "frontier.png"
    plot_frontier(RUNS, 0.05, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    plot_frontier([], 0.05, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").is_file()


def test_importing_the_table_does_not_import_matplotlib():
    code = "import sys, selfdistill.continual.frontier; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
