"""A continual plan with ``report_to: [tensorboard]`` read back with TensorBoard's event reader: each run's stage
evaluations as scalars at the stage index, its accuracy matrix as text and its plots as images; the plan's own
tracker run with report.md and the shared plots; a rerun rebuilds the tracker runs from results.json without
doubling a point; bad ``report_to`` values are one line naming the field."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from selfdistill.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")

PLAN = """
model: tiny-random
seed: 0
report_to: [tensorboard]
train: {batch_size: 2, max_new_tokens: 4, save_every: 0, report_to: [tensorboard]}
methods:
  sft: {lr: 1.0e-3}
stages:
  - {task: record_json, steps: 1}
  - {task: ticket_line, steps: 1}
eval: {limit: 2, batch_size: 2, max_new_tokens: 4}
"""


def _events(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    return events


def _text(events, tag: str) -> str:
    return events.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tracked")
    plan = root / "plan.yaml"
    plan.write_text(PLAN, encoding="utf-8")
    assert main(["continual", str(plan), "--output", str(root / "run"), "--no-progress"]) == 0
    return plan, root / "run"


def _check_run(out: Path) -> None:
    results = json.loads((out / "results.json").read_text())
    stages = results["methods"]["sft"]["stages"]
    events = _events(out / "sft" / "tensorboard")
    scalars = set(events.Tags()["scalars"])
    for task in ("record_json", "ticket_line"):
        for metric in stages[0]["eval"][task]["metrics"]:
            logged = [(e.step, e.value) for e in events.Scalars(f"eval/{task}/{metric}")]
            expected = [(s["index"], s["eval"][task]["metrics"][metric]) for s in stages]
            assert [step for step, _ in logged] == [0, 1, 2]  # once per stage, base included, never doubled
            assert [v for _, v in logged] == pytest.approx([v for _, v in expected])
    assert "train_seconds" in scalars
    matrix = _text(events, "matrix")
    assert matrix.splitlines()[0] == "| after | record_json | ticket_line |"
    assert [line.split(" | ")[0] for line in matrix.splitlines()[2:]] == [
        "| base",
        "| after record_json",
        "| after ticket_line",
    ]
    assert f"{stages[2]['eval']['ticket_line']['metrics']['acc']:.3f}" in matrix.splitlines()[-1]
    assert {"plots/matrix", "plots/training"} <= set(events.Tags()["images"])
    image = events.Images("plots/matrix")[-1]
    assert image.step == 2 and image.encoded_image_string.startswith(b"\x89PNG") and image.width > 100
    assert "json" in _text(events, "config") and '"lr": 0.001' in _text(events, "config")

    report = _events(out / "tensorboard")  # the plan's own tracker run
    assert _text(report, "report").startswith("# Continual run")
    assert {"plots/accuracy_by_stage", "plots/pareto"} <= set(report.Tags()["images"])


def test_continual_run_logs_stage_evals_matrix_and_plots_to_tensorboard(run):
    _, out = run
    _check_run(out)
    for stage in ("stage1-record_json", "stage2-ticket_line"):  # train.report_to: each stage's training
        assert "loss" in _events(out / "sft" / stage / "tensorboard").Tags()["scalars"]


def test_rerun_with_report_to_on_the_command_line_rebuilds_the_tracker_runs(run, caplog):
    caplog.set_level(logging.INFO, logger="selfdistill")
    plan, out = run
    untracked = plan.with_name("untracked.yaml")  # report_to is not part of the plan's fingerprint
    untracked.write_text(PLAN.replace("report_to: [tensorboard]\ntrain", "train"), encoding="utf-8")
    assert main(["continual", str(untracked), "--output", str(out), "--no-progress", "--report-to", "tensorboard"]) == 0
    assert "done, skipped" in caplog.text and ": training sft" not in caplog.text
    _check_run(out)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tb", "report_to: expected one of tensorboard, trackio, wandb, got 'tb'"),
        ("{a: 1}", "report_to: expected a list"),
    ],
)
def test_bad_report_to_is_one_line_naming_the_field(value, expected, tmp_path, capsys):
    plan = tmp_path / "p.yaml"
    plan.write_text(f"report_to: {value}\nmethods: {{sft: {{}}}}\nstages: [{{task: record_json, steps: 1}}]\n")
    assert main(["continual", str(plan), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]
