"""Seeds and sweeps in plans: expansion and labels, one-line errors before any training, a seeded tiny-random run
end to end with mean ± std and a Pareto point per setting, and the across-seed statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from selfdistill.cli import main
from selfdistill.continual.metrics import aggregate, comparisons, mean_std, paired_difference, t_quantile_975
from selfdistill.continual.plan import PlanError, format_value, parse_plan
from selfdistill.continual.report import pareto_points, trajectories

PLAN = {
    "model": "tiny-random",
    "seeds": [0, 1],
    "train": {"batch_size": 2, "max_new_tokens": 4, "save_every": 0},
    "methods": {
        "sft": {"lr": 1.0e-3},
        "sdft": {"teacher_template": "chat-turn", "skip_first_tokens": 0, "sweep": {"lr": [1.0e-4, 3.0e-4]}},
    },
    "stages": [{"task": "record_json", "steps": 1}, {"task": "ticket_line", "steps": 1}],
    "eval": {"limit": 2, "batch_size": 2, "max_new_tokens": 4, "near": [], "prior": ["prior_probe"]},
}


def _parse(raw: dict):
    return parse_plan(raw, "plan.yaml", Path("."))


def _with(**changes) -> dict:
    raw = json.loads(json.dumps(PLAN))
    for path, value in changes.items():
        *keys, last = path.split("__")
        target = raw
        for key in keys:
            target = target[key]
        target[last] = value
    return raw


def test_sweep_and_seeds_expand_to_labelled_runs_seed_by_seed():
    plan = _parse(PLAN)
    assert list(plan.methods) == ["sft", "sdft[lr=1e-4]", "sdft[lr=3e-4]"]
    assert plan.methods["sdft[lr=3e-4]"]["lr"] == 3e-4 and plan.methods["sdft[lr=3e-4]"]["method"] == "sdft"
    assert [r.label for r in plan.runs] == [
        "sft@seed0",
        "sdft[lr=1e-4]@seed0",
        "sdft[lr=3e-4]@seed0",
        "sft@seed1",
        "sdft[lr=1e-4]@seed1",
        "sdft[lr=3e-4]@seed1",
    ]
    assert plan.eval_seed == 0 and plan.seeds == (0, 1)


def test_a_sweep_over_two_fields_is_their_product():
    plan = _parse(_with(methods__sdft__sweep={"lr": [1e-4, 2e-4], "temperature": [0.7, 1.0]}))
    assert [s for s in plan.methods if s.startswith("sdft")] == [
        "sdft[lr=1e-4,temperature=0.7]",
        "sdft[lr=1e-4,temperature=1]",
        "sdft[lr=2e-4,temperature=0.7]",
        "sdft[lr=2e-4,temperature=1]",
    ]


def test_a_single_seed_plan_keeps_plain_labels():
    raw = _with()
    del raw["seeds"]
    raw["seed"] = 3
    plan = _parse(raw)
    assert [r.label for r in plan.runs] == ["sft", "sdft[lr=1e-4]", "sdft[lr=3e-4]"] and plan.eval_seed == 3


@pytest.mark.parametrize(
    "value, text",
    [
        (1e-4, "1e-4"),
        (3.0e-5, "3e-5"),
        (2.5e-4, "2.5e-4"),
        (0.5, "0.5"),
        (1.0, "1"),
        (64, "64"),
        (True, "true"),
        ("chat-turn", "chat-turn"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"methods__sdft__sweep": {"lrr": [1e-4]}}, "plan.yaml: methods.sdft.sweep.lrr: unknown training option"),
        ({"methods__sdft__sweep": {"lr": [1e-4, -1.0]}}, "methods.sdft.sweep.lr[1]: must be > 0"),
        ({"methods__sdft__sweep": {"lr": [1e-4, "fast"]}}, "methods.sdft.sweep.lr[1]: expected a number, got 'fast'"),
        ({"methods__sdft__sweep": {"lr": []}}, "methods.sdft.sweep.lr: expected a non-empty list"),
        ({"methods__sdft__sweep": {"lr": 1e-4}}, "methods.sdft.sweep.lr: expected a non-empty list"),
        ({"methods__sdft__sweep": {"lr": [1e-4, 1e-4]}}, "methods.sdft.sweep.lr[1]: value 1e-4 appears twice"),
        ({"methods__sdft__sweep": {"max_steps": [1, 2]}}, "methods.sdft.sweep.max_steps: set by the plan"),
        ({"methods__sdft__sweep": {}}, "methods.sdft.sweep: must name at least one training option"),
        (
            {"methods__sdft__sweep": {"divergence": ["forward", "sideways"]}},
            "methods.sdft.sweep.divergence[1]: expected one of",
        ),
        ({"seeds": []}, "plan.yaml: seeds: must be a non-empty list of integers"),
        ({"seeds": [0, 1, 0]}, "plan.yaml: seeds[2]: seed 0 appears twice"),
        ({"seeds": [0, "one"]}, "plan.yaml: seeds[1]: expected an integer"),
        ({"seed": 1}, "plan.yaml: seeds: give 'seeds' (a list) or 'seed' (one), not both"),
        ({"eval__split": "dev"}, "plan.yaml: eval.split: must be 'test' or 'validation'"),
        ({"seeds": [-1]}, "plan.yaml: seeds[0]: must be in [0, 2**32), got -1"),
        ({"train__seed": 1}, "plan.yaml: train.seed: set by the plan's 'seeds'"),
        ({"methods__sdft__sweep": {"seed": [0, 1]}}, "methods.sdft.sweep.seed: set by the plan's 'seeds'"),
        ({"methods__sdft__lr": 1e-3}, "methods.sdft.lr: also swept in this method's 'sweep'"),
        (
            {"stages": [{"task": "record_json", "steps": 1, "train": {"lr": 1e-3}}]},
            "stages[0].train.lr: overrides the sweep of methods.sdft",
        ),
        (
            {"methods": {"sft v2": {"method": "sft"}, "sft_v2": {"method": "sft"}}},
            "plan.yaml: methods: the runs 'sft v2@seed0' and 'sft_v2@seed0' would share the directory 'sft_v2@seed0'",
        ),
    ],
)
def test_bad_seeds_and_sweeps_are_one_line_errors(changes, message):
    with pytest.raises(PlanError) as error:
        _parse(_with(**changes))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_sweep_from_the_cli_exits_2_before_training(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(_with(methods__sdft__sweep={"lr": [1e-4, 0.0]}), sort_keys=False))
    assert main(["continual", str(plan), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "methods.sdft.sweep.lr[1]: must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- statistics


def test_t_quantiles_and_paired_interval_by_hand():
    assert t_quantile_975(2) == pytest.approx(4.303) and t_quantile_975(100) == 1.96 and math.isnan(t_quantile_975(0))
    d = paired_difference({0: 0.5, 1: 0.7, 2: 0.9}, {0: 0.4, 1: 0.4, 2: 0.5, 3: 0.0})  # seed 3 has no pair
    diffs = np.array([0.1, 0.3, 0.4])
    half = 4.303 * diffs.std(ddof=1) / math.sqrt(3)
    assert d["n"] == 3 and d["mean"] == pytest.approx(diffs.mean())
    assert (d["lo"], d["hi"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    one = paired_difference({0: 0.5}, {0: 0.25})
    assert one["mean"] == 0.25 and math.isnan(one["lo"]) and one["n"] == 1
    assert mean_std([1.0, math.nan, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seeds")
    plan = root / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN, sort_keys=False))
    out = root / "run"
    assert main(["continual", str(plan), "--output", str(out), "--no-progress", "--no-keep-models"]) == 0
    return out


def test_seeded_sweep_runs_end_to_end(run):
    results = json.loads((run / "results.json").read_text())
    assert results["settings"] == ["sft", "sdft[lr=1e-4]", "sdft[lr=3e-4]"]
    assert len(results["methods"]) == 6
    record = results["methods"]["sdft[lr=3e-4]@seed1"]
    assert (record["setting"], record["seed"], record["config"]["lr"]) == ("sdft[lr=3e-4]", 1, 3e-4)
    assert [s["index"] for s in record["stages"]] == [0, 1, 2]
    config = json.loads((run / "sdft[lr=3e-4]@seed1" / "stage1-record_json" / "train_config.json").read_text())
    assert config["seed"] == 1 and config["lr"] == 3e-4
    assert not list(run.glob("*/stage*/*.safetensors"))  # --no-keep-models: weights gone, metrics kept
    assert not list(run.glob("*/stage*/tokenizer.json"))  # the vocabulary file is no use without them
    assert all((run / r / "stage2-ticket_line" / "metrics.jsonl").is_file() for r in results["methods"])
    agg = aggregate(results)
    assert {len(v["seeds"]) for v in agg.values()} == {2}
    # the evaluation items are the same for every seed: the base row is shared, so its std is 0
    assert np.all(agg["sft"]["matrix_std"][0] == 0)

    report = (run / "report.md").read_text()
    assert "## Across seeds" in report and "### Paired differences" in report
    assert "sdft[lr=1e-4] − sft" in report
    acc = agg["sdft[lr=3e-4]"]["scalars"]["acc"]
    assert f"{acc[0]:.3f} ± {acc[1]:.3f}" in report
    points = pareto_points(results, run)
    assert [p.label for p in points] == ["sft", "sdft[lr=1e-4]", "sdft[lr=3e-4]"]
    assert all(math.isfinite(p.acc_std) and math.isfinite(p.prior_std) for p in points)
    assert (run / "pareto.png").read_bytes().startswith(b"\x89PNG")
    pairs = comparisons(results)
    assert [(p["setting"], p["reference"]) for p in pairs] == [("sdft[lr=1e-4]", "sft"), ("sdft[lr=3e-4]", "sft")]
    assert all(p["acc"]["n"] == 2 for p in pairs)
    lines = trajectories(results)
    assert lines[0].startswith("sft (mean of 2 seeds):") and any(
        "record_json" in line and "→" in line for line in lines
    )


def test_only_seeds_runs_a_subset_and_a_rerun_finishes_the_rest(tmp_path):
    raw = _with(methods={"sft": {"lr": 1e-3}}, stages=[{"task": "record_json", "steps": 1}])
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "run"
    args = ["continual", str(plan), "--output", str(out), "--no-progress"]
    assert main([*args, "--only-seeds", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [len(r["stages"]) for r in results["methods"].values()] == [0, 2]  # seed 0 pending, seed 1 done
    assert "1/2" in (out / "report.md").read_text()  # one of two seeds done
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert [len(r["stages"]) for r in results["methods"].values()] == [2, 2]


def test_a_partial_run_whose_weights_are_gone_starts_over(tmp_path, caplog):
    raw = _with(seeds=[0], methods={"sft": {"lr": 1e-3}})
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "run"
    args = ["continual", str(plan), "--output", str(out), "--no-progress", "--no-keep-models"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    record = results["methods"]["sft@seed0"]
    record["stages"] = record["stages"][:2]  # as if stopped after stage 1, with its weights already deleted
    (out / "results.json").write_text(json.dumps(results))
    caplog.set_level("WARNING")
    assert main(args) == 0
    assert "starts over" in caplog.text
    again = json.loads((out / "results.json").read_text())["methods"]["sft@seed0"]
    assert [s["index"] for s in again["stages"]] == [0, 1, 2]


def test_a_plain_label_that_is_a_reserved_name_is_refused():
    raw = _with(methods={"base": {"method": "sft"}})
    del raw["seeds"]
    with pytest.raises(PlanError, match="reserved name"):
        _parse(raw)


def test_only_seeds_outside_the_plan_is_refused_before_anything_runs(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN, sort_keys=False))
    out = tmp_path / "out"
    assert main(["continual", str(plan), "--output", str(out), "--only-seeds", "7", "--no-progress"]) == 2
    assert "--only-seeds: 7 not in the plan's seeds (0, 1)" in capsys.readouterr().err
    assert not out.exists()
