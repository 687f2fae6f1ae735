"""Evaluation during training on tiny-random: points recorded once, the kept weights saved and restored, patience,
the loss temperature wired to the objective, and bad input refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfdistill.cli import main
from selfdistill.config import TrainConfig
from selfdistill.evaluation import points as points_module
from selfdistill.evaluation.drift import mean_loglik
from selfdistill.evaluation.evaluate import evaluate_tasks
from selfdistill.evaluation.guard import GuardError
from selfdistill.evaluation.points import EVAL_BATCH, resolve_evaluation
from selfdistill.evaluation.tasks import get_task
from selfdistill.models import load_model
from selfdistill.training import selection as selection_module
from selfdistill.training.checkpoint import list_checkpoints
from selfdistill.training.loop import train

TASK = "shipping_zone"  # a registered skill with a validation split and 8-token answers: cheap to score
FLAGS = {"model": "tiny-random", "method": "sft", "data": TASK, "batch_size": 2, "lr": 1e-3, "progress": False}


def _config(out: Path, **extra) -> TrainConfig:
    values = {**FLAGS, "eval_every": 2, "eval_limit": 2, "output": str(out), **extra}
    return TrainConfig.from_mapping(values)


@pytest.fixture
def counted(monkeypatch, tmp_path, data_dir):
    """Every call of the scoring function, by side (the real function runs); the eval cache in tmp_path."""
    monkeypatch.setattr(points_module, "cache_dir", lambda: tmp_path / "cache")
    calls: list[str] = []
    real = selection_module.score

    def spy(model, tok, setup, side, *args, **kwargs):
        calls.append(side)
        return real(model, tok, setup, side, *args, **kwargs)

    monkeypatch.setattr(selection_module, "score", spy)
    return calls


def _doc(out: Path) -> dict:
    return json.loads((out / "selection.json").read_text())


def _eval_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "eval" in row]


def test_points_are_recorded_and_the_kept_weights_are_what_is_saved(tmp_path, counted):
    out = tmp_path / "run"
    train(_config(out, max_steps=4, forgetting_budget=0.05))
    doc = _doc(out)
    assert [p["step"] for p in doc["points"]] == [0, 2, 4]
    assert [r["step"] for r in _eval_rows(out)] == [0, 2, 4]
    assert doc["version"] == 1 and doc["budget"] == 0.05 and doc["eval_every"] == 2 and doc["rule"]
    assert doc["selection"]["name"] == TASK and doc["selection"]["n"] == 2 and doc["selection"]["resolution"] == 0.5
    names = [g["name"] for g in doc["guards"]]
    assert names == ["prior_probe", f"near_{TASK}", "drift"]
    assert all(set(p["guards"]) == set(names) for p in doc["points"])
    assert doc["points"][0]["within"] is True and doc["stopped"] is None
    # tiny-random answers nothing right: every point ties on selection, so the start model (step 0) is kept
    assert doc["kept"]["step"] == 0 and doc["points"][-1]["guards"]["drift"] != 1.0
    assert set(doc["test"]["guards"]) == set(names) and doc["test_base"]["guards"]["drift"] == 1.0
    assert counted == ["selection", "test", "selection", "selection", "test"]
    assert (out / "frontier.png").stat().st_size > 0
    assert "**Kept step 0** within forgetting budget 0.05" in (out / "README.md").read_text()

    # the saved model is the kept point's: the start weights, and its guard scores are the recorded ones exactly
    saved, tok = load_model(str(out))
    start, _ = load_model("tiny-random")
    for (name, a), (_, b) in zip(saved.named_parameters(), start.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    setup = resolve_evaluation(_config(out, max_steps=4, forgetting_budget=0.05))
    for guard in setup.guards:
        task = guard.selection_task()
        result = evaluate_tasks(saved, tok, [task], batch_size=EVAL_BATCH, progress=False)[task.name]
        assert result["metrics"][task.primary_metric] == doc["kept"]["guards"][guard.name]
    assert mean_loglik(saved, tok, setup.drift.selection) == doc["drift_loglik"]["selection"]


def test_kept_step_0_reads_its_test_side_from_the_start_not_a_second_scoring(tmp_path, counted, monkeypatch):
    from selfdistill.evaluation import evaluate

    scored: list[str] = []
    real = evaluate.evaluate_tasks

    def spy(model, tok, tasks, **kwargs):
        scored.extend(task.name for task in tasks)
        return real(model, tok, tasks, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_tasks", spy)
    out = tmp_path / "run"
    train(_config(out, max_steps=4, forgetting_budget=0.05))
    doc = _doc(out)
    assert doc["kept"]["step"] == 0 and doc["test"] == doc["test_base"]
    # three tasks (the skill, prior_probe, the near task) on the selection side at steps 0, 2 and 4 and on the test
    # side once, at the start: kept step 0 is the start model, so the end reads that scoring back
    assert len(scored) == 3 * 3 + 3


def test_a_resumed_run_computes_no_point_twice(tmp_path, counted):
    out = tmp_path / "run"
    cfg = _config(out, max_steps=4, save_every=2, forgetting_budget=0.05)
    train(cfg)
    first = _doc(out)
    list_checkpoints(out)[-1].rename(tmp_path / "gone")  # as if killed after the point at step 4, before its save
    counted.clear()
    train(_config(out, max_steps=4, save_every=2, forgetting_budget=0.05, resume=True))
    assert counted == ["test"]  # the points came from selection.json; only the kept model's test side is scored
    again = _doc(out)
    assert again["points"] == first["points"] and again["kept"] == first["kept"]
    assert [r["step"] for r in _eval_rows(out)] == [0, 2, 4]  # each point logged once in metrics.jsonl


def test_patience_stops_training(tmp_path, counted):
    out = tmp_path / "run"
    train(_config(out, max_steps=6, forgetting_budget=0.05, patience=1))
    doc = _doc(out)
    assert doc["stopped"]["step"] == 2 and "patience" in doc["stopped"]["reason"]
    assert [p["step"] for p in doc["points"]] == [0, 2]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2


def test_without_a_budget_points_are_recorded_and_the_last_step_is_saved(tmp_path, counted):
    out = tmp_path / "run"
    train(_config(out, max_steps=3, drift=False))
    doc = _doc(out)
    assert [p["step"] for p in doc["points"]] == [0, 2, 3]  # every 2 steps and the last
    assert doc["kept"] is None and doc["test"] is None and doc["points"][0]["within"] is None
    assert not (out / "selection").exists() and not (out / "frontier.png").exists()
    assert counted == ["selection"] * 3


def test_the_loss_temperature_reaches_the_objective(tiny):
    from selfdistill.training.parts import _objective

    model, _ = tiny
    for temperature, choice, expected in [(0.5, "rollout", 0.5), (0.5, "none", 1.0), (1.0, "rollout", 1.0)]:
        cfg = TrainConfig.from_mapping({"data": "d", "temperature": temperature, "loss_temperature": choice})
        for fused in (True, False):
            assert _objective(cfg, model, None, fused, None).temperature == expected


# ------------------------------------------------------------------------------------------------------- bad input
def _jsonl(path: Path, *rows: dict) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _overlapping_selection(tmp: Path) -> list[str]:
    example = get_task(TASK).test_examples()[0]
    return ["--selection", _jsonl(tmp / "sel.jsonl", {"prompt": example.question, "answer": example.answer})]


TINY = ["--model", "tiny-random", "--data", TASK, "--no-progress"]
BAD = {
    "budget above one": (["--eval-every", "2", "--forgetting-budget", "1.5"], "--forgetting-budget: must be in [0, 1)"),
    "budget negative": (["--eval-every", "2", "--forgetting-budget", "-0.1"], "--forgetting-budget: must be in [0, 1)"),
    "eval every zero": (["--eval-every", "0"], "--eval-every: must be > 0"),
    "budget without eval every": (["--forgetting-budget", "0.05"], "--forgetting-budget: needs --eval-every"),
    "patience without eval every": (["--patience", "2"], "--patience: needs --eval-every"),
    "patience without budget": (["--eval-every", "2", "--patience", "2"], "--patience: needs --forgetting-budget"),
    "keep file missing": (["--eval-every", "2", "--keep", "/nonexistent/k.jsonl"], "k.jsonl: file not found"),
    "keep file unscorable": (
        lambda tmp: ["--eval-every", "2", "--keep", _jsonl(tmp / "k.jsonl", {"prompt": "hi", "completion": "x"})],
        "no 'answer' to score against",
    ),
    "selection overlaps the test items": (
        lambda tmp: ["--eval-every", "2", *_overlapping_selection(tmp)],
        "selection must not overlap the items the report quotes",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_evaluation_input_is_one_line_exit_2_nothing_written(case, tmp_path, capsys, data_dir):
    extra, expected = BAD[case]
    extra = extra(tmp_path) if callable(extra) else extra
    capsys.readouterr()
    code = main(["train", *TINY, "--output", str(tmp_path / "out"), *extra])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("selfdistill: error: "), lines
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_a_budget_needs_a_guard(tmp_path, data_dir):
    rows = [{"prompt": f"What is {i}+1?", "completion": f"{i + 1}"} for i in range(20)]
    data = _jsonl(tmp_path / "d.jsonl", *rows)  # user data: no near-prior task guards it
    cfg = _config(tmp_path / "out", data=data, forgetting_budget=0.05, drift=False)
    with pytest.raises(GuardError, match="--forgetting-budget: no guard task"):
        resolve_evaluation(cfg, prior=())
