"""report.md and PNG plots from a hand-written run directory (tests/fixtures/results_small)."""

import json
import math
import shutil
from pathlib import Path

import pytest

from selfdistill.continual.report import (
    ReportConfig,
    ResultsError,
    pareto_points,
    run_report,
    run_report_cli,
    write_report,
)

FIXTURE = Path(__file__).parent / "fixtures" / "results_small"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = [
    "accuracy_by_stage.png",
    "pareto.png",
    "matrix_sft.png",
    "matrix_sdft.png",
    "training_sft.png",
    "training_sdft.png",
]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def _edit_results(run_dir: Path, edit) -> None:
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    edit(results)
    path.write_text(json.dumps(results))


def test_full_report_tables_summary_and_plots(run_dir: Path):
    report = write_report(run_dir)
    assert report == run_dir / "report.md"
    text = report.read_text()
    # metrics (see test_metrics.test_summarize_fixture for the arithmetic); train time 120+130 s, 300+310 s
    assert "| sft | 2/2 | 0.550 | -0.400 | +0.050 | 0.400 | — | 0.600 | 0.400 | +0.200 | 4.2 min |" in text
    assert "| sdft | 2/2 | 0.600 | -0.050 | +0.030 | 0.050 | — | 0.600 | 0.570 | +0.030 | 10.2 min |" in text
    # seed-style tables: stage tasks ± stderr, prior average, then each prior task (arc_easy's primary acc_norm)
    assert "| stage | skill_a | skill_b | prior avg | prior_probe | arc_easy |" in text
    assert "| base | 0.100 ± 0.042 | 0.050 ± 0.031 | 0.600 | 0.800 ± 0.057 | 0.400 ± 0.069 |" in text
    assert "| after skill_a | 0.700 ± 0.065 | 0.100 ± 0.042 | 0.480 | 0.600 ± 0.070 | 0.360 ± 0.068 |" in text
    assert "| after skill_b | 0.550 ± 0.070 | 0.650 ± 0.067 | 0.570 | 0.760 ± 0.060 | 0.380 ± 0.069 |" in text
    # what was learned / lost, from the numbers
    assert (
        "- **sft** (2/2 stages): learned skill_a +0.600 (0.100→0.700), skill_b +0.700 (0.100→0.800); "
        "lost skill_a 0.400 from its peak (0.700→0.300), prior average 0.200 (0.600→0.400)."
    ) in text
    assert "lost skill_a 0.050 from its peak (0.600→0.550), prior average 0.030 (0.600→0.570)." in text
    assert "config: `method=sdft · lr=1e-05 · max_steps=3 · teacher=ema`" in text
    for name in PLOTS:
        assert f"]({name})" in text
        assert (run_dir / name).read_bytes().startswith(PNG_SIGNATURE), name
    assert not (run_dir / ".report.md.tmp").exists()


def test_partial_run_still_reports(run_dir: Path):
    def base_only(results):
        results["methods"]["sdft"]["stages"] = results["methods"]["sdft"]["stages"][:1]

    _edit_results(run_dir, base_only)
    shutil.rmtree(run_dir / "sdft")
    with (run_dir / "sft" / "stage2-skill_b" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "lo')  # a run still writing its log
    text = write_report(run_dir).read_text()
    assert "| sdft | 0/2 | 0.075 | — | — | — | — | 0.600 | 0.600 | +0.000 | 0 s |" in text
    assert "- **sdft** (0/2 stages): learned nothing yet" in text
    assert "kept prior average (0.600→0.600)" in text
    assert "training_sdft.png" not in text and not (run_dir / "training_sdft.png").exists()
    for name in ["accuracy_by_stage.png", "pareto.png", "matrix_sdft.png", "training_sft.png"]:
        assert (run_dir / name).read_bytes().startswith(PNG_SIGNATURE), name


def test_method_without_stages(run_dir: Path):
    _edit_results(run_dir, lambda results: results["methods"]["sdft"].update(stages=[]))
    text = write_report(run_dir).read_text()
    assert "| sdft | 0/2 | — |" in text
    assert "matrix_sdft.png" not in text


def test_pareto_includes_sibling_runs_with_the_same_stages(run_dir: Path):
    shutil.copytree(run_dir, run_dir.parent / "other")
    different = Path(shutil.copytree(run_dir, run_dir.parent / "different"))
    _edit_results(different, lambda results: results.update(stage_tasks=["skill_c"]))
    (run_dir.parent / "broken").mkdir()
    (run_dir.parent / "broken" / "results.json").write_text("{not json")
    points = pareto_points(json.loads((run_dir / "results.json").read_text()), run_dir)
    assert [(p.label, p.ours) for p in points] == [
        ("sft", True),
        ("sdft", True),
        ("other/sft", False),
        ("other/sdft", False),
    ]
    assert (points[0].prior, points[0].acc) == pytest.approx((0.40, 0.55))  # (prior avg at end, ACC at end)
    assert math.isnan(points[0].acc_std)  # one seed: no spread
    assert write_report(run_dir).exists()


def test_missing_directory_or_results_raise_one_line_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        run_report_cli(ReportConfig(run_dir=tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="results.json"):
        run_report(tmp_path)
    (tmp_path / "results.json").write_text("{oops")
    with pytest.raises(ResultsError, match="not valid JSON"):  # a ValueError
        run_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"stage_tasks": [], "methods": {"sft": {"stages": [{}]}}}))
    with pytest.raises(ValueError, match="methods.sft.stages must be a list of objects with an integer 'index'"):
        run_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"stage_tasks": "skill_a", "methods": {}}))
    with pytest.raises(ValueError, match="'stage_tasks' must be a list") as error:
        run_report(str(tmp_path))
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)
