"""Plans under a forgetting budget: the plan keys, files resolved before any work, what each stage guards and is
held to, selection.json read into results.json, and the report's budget section (hand-made results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfdistill.cli import main
from selfdistill.continual.budgeted import check_plan_inputs, guard_references, read_selection, stage_guards
from selfdistill.continual.plan import PlanError, load_plan
from selfdistill.continual.report import write_report
from selfdistill.continual.results import GuardRecord, Results, RunRecord, StageRecord, TaskScore, TrainingEval
from selfdistill.continual.stage_eval import load_tasks
from selfdistill.evaluation.guard import item_key, resolve_guards

PNG = b"\x89PNG\r\n\x1a\n"
STAGES = (
    "stages:\n  - {task: record_json, steps: 2}\n  - {task: ticket_line, steps: 2}\n  - {task: arith_steps, steps: 2}\n"
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _plan(tmp_path: Path, head: str, stages: str = STAGES):
    return load_plan(_write(tmp_path / "p.yaml", head + "methods: {sft: {}, sdft: {}}\n" + stages))


# ------------------------------------------------------------------------------------------------------ plan keys
def test_budget_keys_for_all_stages_or_per_stage(tmp_path):
    _write(tmp_path / "old.jsonl", json.dumps({"prompt": "2+2?", "completion": "4"}) + "\n")
    plan = _plan(
        tmp_path,
        "train: {eval_every: 2, forgetting_budget: 0.05, eval_limit: 4, keep: ['old.jsonl:exact']}\n",
        "stages:\n  - {task: record_json, steps: 4, train: {patience: 2, evaluation: {eval_every: 1}}}\n",
    )
    overrides = plan.train_overrides("sft", plan.stages[0])
    assert overrides["eval_every"] == 1 and overrides["patience"] == 2  # the stage's own wins, nested or flat
    assert overrides["forgetting_budget"] == 0.05 and overrides["eval_limit"] == 4
    assert overrides["keep"] == [f"{tmp_path / 'old.jsonl'}:exact"]  # relative to the plan file, like data


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("train: {eval_every: 2, forgetting_budget: 1.5}\n", "train.forgetting_budget: must be in [0, 1)"),
        ("train: {eval_every: 0}\n", "train.eval_every: must be > 0"),
        ("train: {forgetting_budget: 0.05}\n", "train.forgetting_budget: needs --eval-every"),
        ("train: {eval_every: 2, guard_base: refs.json}\n", "train.guard_base: set by the plan"),
        ("train: {eval_every: 2, keep: [gone.jsonl]}\n", "train.keep[0]: "),
        ("train: {eval_every: 2}\neval: {split: validation}\n", "eval.split: validation"),
    ],
)
def test_bad_budget_keys_exit_2_in_one_line(head, expected, tmp_path, capsys):
    plan = _write(tmp_path / "p.yaml", head + "methods: {sft: {}}\nstages: [{task: record_json, steps: 1}]\n")
    assert main(["continual", str(plan), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [("missing.jsonl", "methods.sft.anchor: "), ("no_such_pool", "anchor: no_such_pool: no such file")],
)
def test_missing_anchor_fails_before_any_work(anchor, expected, tmp_path, capsys):
    """Before: the base model was evaluated and base/, plan.json and results.json written, then the stage failed."""
    text = f"model: tiny-random\nmethods: {{sft: {{anchor: {anchor}}}}}\nstages: [{{task: record_json, steps: 1}}]\n"
    plan = _write(tmp_path / "p.yaml", text)
    assert main(["continual", str(plan), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- guards per stage
def test_each_stage_guards_every_earlier_stage_and_its_near_tasks(tmp_path):
    plan = _plan(tmp_path, "train: {eval_every: 2, forgetting_budget: 0.05, keep: [prior_probe]}\n")
    assert stage_guards(plan, "sft", 1) == ([], ["prior_probe"])
    assert stage_guards(plan, "sft", 3) == (
        ["record_json", "ticket_line"],
        ["prior_probe", "near_record_json", "near_ticket_line"],
    )


def _stage(index: int, name: str, kept: int, points, guards, test=None, test_base=None) -> StageRecord:
    return StageRecord(
        index,
        name,
        name,
        f"run/stage{index}-{name}",
        1.0,
        {name: TaskScore({"acc": points[-1][1]}, {"acc": 0.1}, 4, "acc")},
        kept_step=kept,
        training_evals=[TrainingEval(s, sel, g) for s, sel, g in points],
        budget=0.05,
        guards=guards,
        kept_test=test,
        test_base=test_base,
        drift_loglik={"selection": -2.5, "test": -2.6},
    )


def test_budget_is_cumulative_and_an_earlier_skill_is_held_to_its_stage_end(tmp_path):
    plan = _plan(tmp_path, "train: {eval_every: 2, forgetting_budget: 0.05}\n")
    first = _stage(
        1,
        "record_json",
        kept=2,
        points=[(0, 0.0, {"prior_probe": 0.9}), (2, 0.75, {"prior_probe": 0.875}), (4, 0.8, {"prior_probe": 0.5})],
        guards={"prior_probe": GuardRecord("prior", 8, 0.125, 0.9, 0.85)},
        test=TrainingEval(2, 0.7, {"prior_probe": 0.8}),
    )
    second = _stage(
        2,
        "ticket_line",
        kept=4,
        points=[(0, 0.1, {"prior_probe": 0.8, "record_json": 0.7}), (4, 0.6, {"prior_probe": 0.8, "record_json": 0.7})],
        guards={  # stage 2 measured prior_probe again from its own start; the first reference must win
            "prior_probe": GuardRecord("prior", 8, 0.125, 0.875, 0.8),
            "record_json": GuardRecord("stage", 4, 0.25, 0.75, 0.7),
        },
    )
    record = RunRecord("sft", 0, {"method": "sft"}, [first, second])
    refs = guard_references(plan, record, 3)
    assert refs["guards"] == {"prior_probe": 0.9, "record_json": 0.75, "ticket_line": 0.6}
    assert refs["test"] == {"prior_probe": 0.85, "record_json": 0.7}
    assert refs["drift_loglik"] == {"selection": -2.5, "test": -2.6}
    assert guard_references(plan, record, 1) == {"guards": {}, "test": {}}


def test_quoted_items_are_not_guard_selection_items(tmp_path):
    """In a plan that evaluates in training, a column without a validation split is scored on its guard test half."""
    plan = _plan(tmp_path, "train: {eval_every: 2}\neval: {prior: [prior_probe]}\n")
    quoted = dict((name, task) for name, task, _ in load_tasks(plan))["prior_probe"].test_examples()
    guard = resolve_guards(None, prior=["prior_probe"])[0]
    assert quoted and {item_key(ex) for ex in quoted} == {item_key(ex) for ex in guard.test_items}
    assert not {item_key(ex) for ex in quoted} & {item_key(ex) for ex in guard.selection_items}


# ---------------------------------------------------------------------------------------------- selection.json
SELECTION = {
    "version": 1,
    "eval_every": 2,
    "budget": 0.05,
    "rule": "…",
    "selection": {"name": "record_json", "n": 4, "resolution": 0.25},
    "guards": [
        {"name": "prior_probe", "origin": "prior", "n": 8, "resolution": 0.125},
        {"name": "drift", "origin": "drift", "n": 0, "resolution": 0.0},
    ],
    "base": {"selection": 0.0, "guards": {"prior_probe": 0.875, "drift": 1.0}},
    "points": [
        {"step": 0, "selection": 0.0, "guards": {"prior_probe": 0.875, "drift": 1.0}, "within": True},
        {"step": 2, "selection": 0.5, "guards": {"prior_probe": 0.875, "drift": 0.99}, "within": True},
        {"step": 4, "selection": 0.75, "guards": {"prior_probe": 0.5, "drift": 0.9}, "within": False},
    ],
    "kept": {"step": 2, "selection": 0.5, "guards": {"prior_probe": 0.875, "drift": 0.99}},
    "stopped": None,
    "test": {"selection": 0.4, "guards": {"prior_probe": 0.75, "drift": 0.98}},
    "test_base": {"selection": 0.0, "guards": {"prior_probe": 0.8, "drift": 1.0}},
    "drift_loglik": {"selection": -2.5, "test": -2.6},
}


def test_selection_json_goes_into_the_stage_record(tmp_path):
    _write(tmp_path / "selection.json", json.dumps(SELECTION))
    stage = StageRecord(1, "record_json", "record_json", "sft/stage1", 3.0, {}, **read_selection(tmp_path))
    assert stage.kept_step == 2 and stage.budget == 0.05
    assert [p.step for p in stage.training_evals] == [0, 2, 4]
    assert stage.guards["prior_probe"] == GuardRecord("prior", 8, 0.125, 0.875, 0.8)
    assert stage.kept_test == TrainingEval(2, 0.4, {"prior_probe": 0.75, "drift": 0.98})
    assert StageRecord.from_json(json.loads(json.dumps(stage.to_json()))) == stage  # round trip through the file
    assert read_selection(tmp_path / "none") == {}
    assert "guards" not in StageRecord(1, "a", "a", None, 0.0, {}).to_json()  # old files read back unchanged


# ------------------------------------------------------------------------------------------------------- report
def _results() -> Results:
    tasks = ["record_json", "ticket_line"]
    runs = {}
    for setting in ("sft", "sdft"):
        for seed in (0, 1):
            gain = 0.1 * seed + (0.2 if setting == "sdft" else 0.0)
            stages = [
                StageRecord(0, "base", None, None, 0.0, {t: TaskScore({"acc": 0.0}, {}, 4, "acc") for t in tasks})
            ]
            for k, task in enumerate(tasks, start=1):
                guards = {"prior_probe": GuardRecord("prior", 8, 0.125, 0.875, 0.8)}
                points = [(0, 0.0, {"prior_probe": 0.875}), (2, 0.5 + gain, {"prior_probe": 0.875})]
                points.append((4, 0.9, {"prior_probe": 0.5}))
                test = TrainingEval(2, 0.4 + gain, {"prior_probe": 0.75})
                stages.append(_stage(k, task, 2, points, guards, test))
                stages[-1].eval = {t: TaskScore({"acc": 0.5 + gain}, {}, 4, "acc") for t in tasks}
            runs[f"{setting}@seed{seed}"] = RunRecord(setting, seed, {"method": setting}, stages)
    return Results(tasks, runs=runs, settings=["sft", "sdft"], model="tiny-random")


def test_report_has_the_best_within_budget_table_and_the_frontier(tmp_path):
    _results().save(tmp_path)
    text = write_report(tmp_path).read_text()
    assert "## Within the forgetting budget" in text
    assert text.count("Best within a forgetting budget of 0.05") == 2  # one per stage
    row = next(line for line in text.splitlines() if line.startswith("| sdft | 2 | 2, 2 |"))
    assert "0.750 ± 0.071" in row and "+0.200" in row  # mean ± std over seeds; paired difference to sft
    assert "| prior_probe | prior | 8 | 0.125 | 0.875 |" in text  # each guard's items and what one is worth
    assert "| after record_json | 2, 2 |" in text  # the seed-style table of what each stage kept
    assert (tmp_path / "frontier.png").read_bytes().startswith(PNG)


def test_a_plan_without_evaluation_in_training_has_no_budget_section(tmp_path):
    results = _results()
    for run in results.runs.values():
        for stage in run.stages:
            stage.training_evals, stage.guards = [], {}
    results.save(tmp_path)
    assert "forgetting budget" not in write_report(tmp_path).read_text()
    assert not (tmp_path / "frontier.png").exists()


def test_plan_error_names_the_setting_and_stage(tmp_path):
    plan = _plan(tmp_path, "train: {eval_every: 2, keep: [no_such_task]}\n")
    with pytest.raises(PlanError, match=r"methods\.sft at stages\[0\] \(record_json\): --keep no_such_task"):
        check_plan_inputs(plan)


# ----------------------------------------------------------------------------------------------------- end to end
def test_budgeted_plan_with_seeds_runs_end_to_end(tmp_path, capsys):
    """examples/budget.yaml: two settings × seeds [0, 1] × two stages, each stage evaluated at steps 0 and 2."""
    out = tmp_path / "run"
    plan = Path(__file__).resolve().parents[1] / "examples" / "budget.yaml"
    assert main(["continual", str(plan), "--output", str(out), "--no-progress"]) == 0
    results = Results.load(out)
    assert set(results.runs) == {"sft@seed0", "sdft@seed0", "sft@seed1", "sdft@seed1"}
    for run in results.runs.values():
        first, second = run.stage(1), run.stage(2)
        assert [p.step for p in first.training_evals] == [0, 2] and first.budget == 0.05
        assert first.kept_step in (0, 2) and {"prior_probe", "near_record_json"} <= set(first.guards)
        assert {"record_json", "near_record_json", "near_ticket_line"} <= set(second.guards)  # earlier stage joins
        kept = next(p for p in first.training_evals if p.step == first.kept_step)
        assert second.guards["record_json"].base == kept.selection  # held to its score when its stage ended
        assert second.guards["prior_probe"].base == first.guards["prior_probe"].base  # cumulative from the start
    text = (out / "report.md").read_text()
    assert text.count("Best within a forgetting budget of 0.05") == 2
    assert (out / "frontier.png").read_bytes().startswith(PNG)
    # a finished stage keeps its model, not the budget's scratch copy of the kept weights
    assert not list(out.glob("*/*/selection/*.safetensors")) and len(list(out.glob("*/*/selection.json"))) == 8
