"""benchmarks/budget.py: the committed plans are the ones the script writes (the study's settings were fixed before
its results), and the replay anchor's prompts sit on the skills' surface without touching a guard item or a training
prompt."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from selfdistill.continual.plan import load_plan
from selfdistill.evaluation.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def budget(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("budget")


def test_the_committed_plans_are_what_the_script_writes(budget, tmp_path):
    for seed in budget.SEEDS:
        committed = ROOT / "benchmarks" / "forgetting" / f"budget_s1_seed{seed}.yaml"
        where = budget.COMMITTED.elsewhere(tmp_path / "results")
        written = budget.seed_plan(seed, where, smoke=False)
        ours, theirs = yaml.safe_load(written.read_text()), yaml.safe_load(committed.read_text())
        assert {k: v for k, v in ours.items() if k != "output"} == {k: v for k, v in theirs.items() if k != "output"}
        assert (where.plans / budget.ANCHOR_FILE).read_text() == (committed.parent / budget.ANCHOR_FILE).read_text()
        plan = load_plan(committed)
        assert plan.seeds == (seed,) and [s.name for s in plan.stages] == list(budget.SKILLS)
        assert all(o["forgetting_budget"] == 0.05 and o["eval_every"] == 4 for o in plan.methods.values())


def test_anchor_prompts_are_on_the_skills_surface_and_never_a_guard_or_training_prompt(budget):
    rows = [row["prompt"] for row in budget.anchor_prompts(per_skill=32)]
    assert len(rows) == len(set(rows)) == 64
    for skill in budget.SKILLS:
        near, task = get_task(f"near_{skill}", None), get_task(skill, None)
        guarded = {e.messages[-1]["content"] for e in near.candidates()}
        trained = {e.messages[-1]["content"] for e in task.train_examples() + task.validation_examples()}
        assert not guarded & set(rows) and not trained & set(rows)
    assert any("years old" in r for r in rows) and any(r.startswith("Ticket ") for r in rows)


def test_the_terminal_says_where_each_run_ended_and_what_it_kept():
    """On the committed study (seed 1, stage 1): a run that learned over budget and one that learned within it."""
    from selfdistill.continual.budget_report import last_points
    from selfdistill.continual.results import Results

    lines = last_points(Results.load(ROOT / "benchmarks" / "results" / "budget" / "s1_seed1"), 1)
    by_run = {line.split(":")[0].strip(): line for line in lines}
    assert set(by_run) == {"sft@seed1", "sdft@seed1", "sdft-t0.5@seed1", "sft+anchor@seed1"}
    assert "step 12 scored 1.00" in by_run["sft@seed1"] and by_run["sft@seed1"].endswith("(over budget); kept step 0")
    assert by_run["sft+anchor@seed1"].endswith("(within budget); kept step 12")
