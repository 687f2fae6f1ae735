"""benchmarks/recipes.py (and recipe_analysis.py, digest.py): the pre-registered choice of the recipe, the goal of
the final comparison, and the diagnostics read from each run's digest."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def recipes(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = importlib.import_module("recipes")
    # plans written by the test stay out of the tree; the results they name are the committed ones
    monkeypatch.setattr(module, "RECIPES", module.common.Where(module.RESULTS, tmp_path))
    return module


def test_no_recipe_is_chosen_before_every_setting_finished_every_sequence(recipes):
    scores = {k: {"s1": 1.0, "s2": 1.0} for k in recipes.SETTINGS}
    del scores["sdft+mix"]["s2"]
    assert recipes.chosen_recipe(scores) is None


def test_the_choice_is_the_best_mean_among_self_distillation_settings_and_a_tie_goes_to_fewer_parts(recipes):
    scores = {k: {"s1": 1.0, "s2": 1.0} for k in recipes.SETTINGS}
    scores["sft"] = {"s1": 9.0, "s2": 9.0}  # a baseline is never the recipe, however well it scores
    scores["sdft+anchor+corrected"] = {"s1": 1.5, "s2": 1.5}
    scores["sdft+anchor"] = {"s1": 2.0, "s2": 1.0}  # the same mean, one part fewer
    assert recipes.chosen_recipe(scores) == "sdft+anchor"
    scores["sdft+corrected"] = {"s1": 1.0, "s2": 2.2}
    assert recipes.chosen_recipe(scores) == "sdft+corrected"


def test_the_final_comparison_runs_only_what_the_forgetting_benchmark_does_not_have(recipes):
    assert recipes.final_settings("sdft+anchor", smoke=False) == ["sft+anchor", "seqkd+filter", "sdft+anchor"]
    assert recipes.final_settings("seqkd+filter", smoke=False) == ["sft+anchor", "seqkd+filter"]
    assert recipes.final_settings("sdft", smoke=False) == ["sft+anchor", "seqkd+filter"]
    assert recipes.final_settings("sdft+mix", smoke=True) == ["sft", "sdft", "sft+anchor", "seqkd+filter", "sdft+mix"]


def test_the_final_plan_is_the_forgetting_benchmarks_plan_so_its_sft_and_sdft_runs_pair_with_it(recipes):
    lrs = {"sft": 3e-5, "sdft": 1e-4, "seqkd": 3e-5}
    final = yaml.safe_load(recipes.final_plan("s3", lrs, "sdft+corrected", smoke=False).read_text())
    bench = yaml.safe_load(recipes.forgetting.sequence_plan("s3", lrs, recipes.RECIPES).read_text())
    for key in ("model", "seeds", "train", "stages", "eval"):
        assert final[key] == bench[key], key
    assert final["output"] != bench["output"]
    # the recipe is sdft with the benchmark's sdft options and lr, plus the corrected rollouts
    assert final["methods"]["sdft+corrected"] == {"method": "sdft", **bench["methods"]["sdft"], **recipes.CORRECTED}
    assert set(final["methods"]) == {"sft+anchor", "seqkd+filter", "sdft+corrected"}


def _seeds(acc, prior, near):
    return {"acc": dict(enumerate(acc)), "prior_drop": dict(enumerate(prior)), "near_drop": dict(enumerate(near))}


def test_the_goal_needs_both_drops_at_most_a_quarter_of_sfts_at_no_less_acc(recipes):
    sft = _seeds([0.30, 0.20, 0.25], [0.08, 0.12, 0.10], [0.40, 0.40, 0.40])  # means 0.25, 0.10, 0.40
    assert recipes.goal_met(_seeds([0.25, 0.25, 0.25], [0.025, 0.025, 0.025], [0.1, 0.1, 0.1]), sft) is True
    assert recipes.goal_met(_seeds([0.24, 0.25, 0.25], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), sft) is False  # ACC
    assert recipes.goal_met(_seeds([0.9, 0.9, 0.9], [0.026, 0.025, 0.025], [0.0, 0.0, 0.0]), sft) is False  # prior
    assert recipes.goal_met(_seeds([0.9, 0.9, 0.9], [0.0, 0.0, 0.0], [0.11, 0.1, 0.1]), sft) is False  # near-prior
    assert recipes.goal_met(_seeds([math.nan], [0.0], [0.0]), sft) is None  # nothing finished yet
    # one finished seed is compared with SFT's same seed (0.30 / 0.08 / 0.40), not with SFT's mean over three
    assert recipes.goal_met(_seeds([0.28], [0.0], [0.0]), sft) is False
    assert recipes.goal_met(_seeds([0.30], [0.02], [0.10]), sft) is True
    assert recipes.goal_met(_seeds([0.9], [0.0], [0.0]), _seeds([], [], [])) is None  # no shared seed


def test_stage_diagnostics_average_each_stage_over_its_training_steps_per_seed(recipes, tmp_path):
    run_dir = tmp_path / "final_s1"
    stages = [{"index": 0, "name": "base", "train_dir": None}]
    for index, kls in ((1, [0.2, 0.4]), (2, [0.1])):
        stage_dir = run_dir / "r" / f"stage{index}"
        stage_dir.mkdir(parents=True)
        rows = [{"step": i + 1, "loss": kl, "kl": kl, "anchor_kl": kl / 10} for i, kl in enumerate(kls)]
        rows.append({"final": True})  # a row without a loss (not a training step) is left out
        (stage_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        stages.append({"index": index, "name": f"t{index}", "train_dir": f"r/stage{index}"})
    methods = {
        "sdft+anchor@seed3": {"setting": "sdft+anchor", "seed": 3, "stages": stages},
        "sft@seed3": {"setting": "sft", "seed": 3, "stages": stages},
    }
    (run_dir / "results.json").write_text(json.dumps({"stage_tasks": [], "prior_tasks": [], "methods": methods}))
    got = recipes.analysis.stage_diagnostics(run_dir, "sdft+anchor")
    assert got[1]["kl"] == {3: pytest.approx(0.3)} and got[1]["anchor_kl"] == {3: pytest.approx(0.03)}
    assert got[2]["kl"] == {3: pytest.approx(0.1)}
    last = recipes.analysis.stage_diagnostics(run_dir, "sdft+anchor", slice(-1, None))  # a stage's last step alone
    assert last[1]["kl"] == {3: pytest.approx(0.4)} and last[2]["kl"] == {3: pytest.approx(0.1)}
    assert set(got) == {1, 2} and "student_entropy" not in got[1]
    assert recipes.analysis.stage_diagnostics(tmp_path / "missing", "sdft+anchor") == {}
    # the digest keeps what the tables need once the per-step files are gone (they stay out of git)
    importlib.import_module("digest").write_digest(run_dir)
    for index in (1, 2):
        (run_dir / "r" / f"stage{index}" / "metrics.jsonl").unlink()
    assert recipes.analysis.stage_diagnostics(run_dir, "sdft+anchor") == got
    assert recipes.analysis.stage_diagnostics(run_dir, "sdft+anchor", slice(-1, None)) == last


def test_the_committed_benchmark_runs_resume_under_the_plans_the_code_writes_today(recipes):
    """A changed plan makes a resume refuse the run directory (and a run of other settings would not pair with the
    recorded seeds), so every plan the scripts write must match the one recorded beside the committed results."""
    from selfdistill.continual.plan import load_plan

    forgetting = recipes.forgetting
    bench = recipes.common.Where(forgetting.COMMITTED.results, recipes.RECIPES.plans)
    lrs = json.loads((bench.results / "chosen_lr.json").read_text())
    recipe = json.loads((recipes.RESULTS / "chosen_recipe.json").read_text())["recipe"]
    written = {bench.results / "tune": forgetting.tune_plan(bench)}
    for name in forgetting.SEQUENCES:
        written[bench.results / name] = forgetting.sequence_plan(name, lrs, bench)
        written[recipes.RESULTS / f"final_{name}"] = recipes.final_plan(name, lrs, recipe, smoke=False)
    for name in recipes.SCREEN_SEQUENCES:
        written[recipes.RESULTS / f"screen_{name}"] = recipes.screen_plan(name, lrs, smoke=False)
    for skill in recipes.analysis.PILOT_SKILLS:
        for kind in recipes.analysis.PILOTS:
            plan = recipes.analysis.pilot_plan(skill, lrs, smoke=False, kind=kind, where=recipes.RECIPES)
            written[recipes.analysis.pilot_dir(kind, skill, smoke=False)] = plan
    for run_dir, path in written.items():
        recorded = json.loads((run_dir / "plan.json").read_text())
        assert load_plan(path).fingerprint() == recorded, run_dir.name


def test_the_final_comparison_pairs_the_benchmarks_sft_and_sdft_with_its_own_runs_and_plots_them(recipes, tmp_path):
    seqs = recipes.final_per_seed("s2", "sdft+anchor")
    assert list(seqs) == ["sft", "sdft", "sft+anchor", "seqkd+filter", "sdft+anchor"]
    assert sorted(seqs["sft"]["acc"]) == [0, 1, 2]  # the forgetting benchmark's three seeds
    assert 0 in seqs["sdft+anchor"]["acc"]
    path = tmp_path / "final_pareto.png"
    recipes.plot_final(
        {name: recipes.final_per_seed(name, "sdft+anchor") for name in ("s1", "s2")}, "sdft+anchor", path
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resume_that_finds_every_stage_done_records_no_wall_time(recipes, tmp_path, monkeypatch):
    out = tmp_path / "run"
    recorded = iter([b'{"stages": 1}', b'{"stages": 1}', b'{"stages": 2}'])

    def run_plan(_plan, _seeds):  # each call leaves results.json as the next recorded state
        out.mkdir(exist_ok=True)
        (out / "results.json").write_bytes(next(recorded))

    plan = tmp_path / "plan.yaml"
    plan.write_text(f"output: {out}\n")
    run_plan_file = recipes.common.run_plan_file
    assert run_plan_file(plan, runner=run_plan) is True  # a first run: results.json appears
    assert run_plan_file(plan, runner=run_plan) is False  # nothing left to do: the record is unchanged
    assert run_plan_file(plan, runner=run_plan) is True  # a stage finished
    assert (out / "digest.json").is_file()  # what the summaries need of the per-item files, after every run
    # recipes.py final times only the units that ran
    monkeypatch.setattr(recipes, "FORGETTING", tmp_path)
    monkeypatch.setattr(recipes, "RESULTS", tmp_path)
    (tmp_path / "chosen_lr.json").write_text(json.dumps({"sft": 3e-5, "sdft": 1e-4, "seqkd": 3e-5}))
    (tmp_path / "chosen_recipe.json").write_text(json.dumps({"recipe": "sdft+anchor"}))
    ran = {"s1": True, "s2": False}
    monkeypatch.setattr(recipes.common, "run_plan_file", lambda path, seeds: ran[Path(path).stem.split("_")[-1]])
    monkeypatch.setattr(recipes, "cmd_final_summary", lambda *_: None)
    recipes.cmd_final(SimpleNamespace(smoke=False, seeds=[1], sequences=["s1", "s2"]))
    lines = [json.loads(x) for x in (tmp_path / "wall_times.jsonl").read_text().splitlines()]
    assert [x["what"] for x in lines] == ["final s1 seed 1"]


def test_answer_agreement_reads_each_skill_right_after_its_own_stage_and_the_base_models_answers(recipes, tmp_path):
    run_dir = tmp_path / "final_s1"

    def predictions(where: str, rows: list[tuple[str, str, str, float]]) -> None:
        (run_dir / where).mkdir(parents=True)
        lines = [
            json.dumps({"task": t, "id": str(i), "prediction": p, "gold": g, "scores": {"acc": a}})
            for i, (t, p, g, a) in enumerate(rows)
        ]
        (run_dir / where / "predictions.jsonl").write_text("\n".join(lines) + "\n")

    predictions("base", [("a", "nothing", '{"k": 1}', 0.0), ("b", "#7 X", "#7 X", 1.0)])
    # after stage 1 (task a): one answer right, one that leaves the gold answer after 6 of its 8 characters;
    # its answers to task b are another stage's and are not read
    predictions(
        "r/stage1/eval",
        [("a", '{"k": 1}', '{"k": 1}', 1.0), ("a", ' {"k": 2}', '{"k": 1}', 0.0), ("b", "junk", "#7 X", 0.0)],
    )
    stages = [
        {"index": 0, "name": "base", "train_task": None, "train_dir": None},
        {"index": 1, "name": "a", "train_task": "a", "train_dir": "r/stage1"},
    ]
    methods = {
        "sdft@seed0": {"setting": "sdft", "seed": 0, "stages": stages},
        "sft@seed0": {"setting": "sft", "seed": 0, "stages": stages[:1]},
    }
    (run_dir / "results.json").write_text(
        json.dumps({"stage_tasks": ["a", "b"], "prior_tasks": [], "methods": methods})
    )
    got = recipes.analysis.answer_agreement(run_dir, "sdft")
    assert list(got) == ["a"]
    assert got["a"]["first"] == [1.0] and got["a"]["acc"] == [0.5]
    assert got["a"]["prefix"] == [pytest.approx((1.0 + 6 / 8) / 2)]  # the leading space is stripped first
    assert recipes.analysis.answer_agreement(run_dir, "sft") == {}  # no finished stage
    base = recipes.analysis.answer_agreement(run_dir, "base")
    assert base["a"] == {"first": [0.0], "prefix": [0.0], "acc": [0.0]} and base["b"]["prefix"] == [1.0]
    importlib.import_module("digest").write_digest(
        run_dir
    )  # the same answers from the digest alone, once predictions are gone
    for where in ("base", "r/stage1/eval"):
        (run_dir / where / "predictions.jsonl").unlink()
    assert recipes.analysis.answer_agreement(run_dir, "sdft") == got
    assert recipes.analysis.answer_agreement(run_dir, "base") == base


def test_the_teacher_table_puts_the_probes_greedy_accuracy_beside_the_share_of_samples_seqkd_kept(recipes, tmp_path):
    (tmp_path / "probe.json").write_text(json.dumps({"record_json": {"teacher": 1.0}}))
    run_dir = tmp_path / "final_s1"  # s1 trains record_json first
    stage_dir = run_dir / "r" / "stage1"
    stage_dir.mkdir(parents=True)
    rows = [{"step": 1, "loss": 1.0, "seqkd_kept": 0.25}, {"step": 2, "loss": 1.0, "seqkd_kept": 0.0}]
    (stage_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stages = [
        {"index": 0, "name": "base", "train_dir": None},
        {"index": 1, "name": "record_json", "train_dir": "r/stage1"},
    ]
    methods = {"seqkd+filter@seed0": {"setting": "seqkd+filter", "seed": 0, "stages": stages}}
    (run_dir / "results.json").write_text(json.dumps({"stage_tasks": [], "prior_tasks": [], "methods": methods}))
    assert "| record_json | 1.00 | 1 | 0.125 (n=1) |" in recipes.analysis.teacher_table(tmp_path, tmp_path)


def test_the_pilot_changes_only_the_rollout_temperature_of_the_benchmarks_sdft_on_validation_splits(recipes):
    lrs = {"sft": 3e-5, "sdft": 1e-4, "seqkd": 3e-5}
    plan = yaml.safe_load(recipes.analysis.pilot_plan("ticket_line", lrs, False, where=recipes.RECIPES).read_text())
    sdft = plan["methods"]["sdft"]
    assert sdft == {"method": "sdft", **recipes.forgetting.METHODS["sdft"], "lr": 1e-4}
    assert set(plan["methods"]) == {"sdft", "sdft[T=0.5]"}
    assert plan["methods"]["sdft[T=0.5]"] == {**sdft, "temperature": 0.5}
    assert plan["stages"] == [{"task": "ticket_line", "steps": recipes.forgetting.STEPS}]
    assert plan["eval"]["split"] == "validation" and plan["eval"]["near"] == ["near_ticket_line"]
    assert plan["train"] == recipes.forgetting.TRAIN and plan["seeds"] == list(recipes.forgetting.SEEDS)


def test_the_teacher_pilot_changes_only_the_teacher_temperature_and_pairs_with_the_rollout_pilots_sdft(recipes):
    lrs = {"sft": 3e-5, "sdft": 1e-4, "seqkd": 3e-5}
    rollout = yaml.safe_load(recipes.analysis.pilot_plan("extract_trip", lrs, False, where=recipes.RECIPES).read_text())
    teacher = yaml.safe_load(
        recipes.analysis.pilot_plan("extract_trip", lrs, False, "teacher", recipes.RECIPES).read_text()
    )
    assert teacher["methods"] == {"sdft[teacher T=0.5]": {**rollout["methods"]["sdft"], "teacher_temperature": 0.5}}
    assert teacher["output"].endswith("pilot_teacher_extract_trip") and teacher["output"] != rollout["output"]
    assert {k: v for k, v in teacher.items() if k not in ("methods", "output")} == {
        k: v for k, v in rollout.items() if k not in ("methods", "output")
    }


def test_the_pilots_per_seed_values_agree_with_their_table_and_pair_every_setting_with_sdft(recipes):
    """On the committed pilot runs: per-seed prefix shares average to the table's, and every setting pairs with sdft."""
    analysis = recipes.analysis
    for skill in analysis.PILOT_SKILLS:
        per_seed = analysis.pilot_per_seed(skill)
        assert {"sdft", "sdft[T=0.5]", "sdft[teacher T=0.5]"} <= set(per_seed)
        for kind in analysis.PILOTS:
            run_dir = analysis.pilot_dir(kind, skill, smoke=False)
            for setting in {run["setting"] for run in analysis.load_results(run_dir)["methods"].values()}:
                listed = analysis.answer_agreement(run_dir, setting)[skill]["prefix"]
                by_seed = per_seed[setting]["prefix"]
                assert sum(by_seed.values()) / len(by_seed) == pytest.approx(sum(listed) / len(listed))
                assert 0 in set(by_seed) & set(per_seed["sdft"]["prefix"])
    table = analysis.pilot_differences()
    assert "sdft[teacher T=0.5] − sdft" in table and "sdft − sdft" not in table
