"""Continual runs end to end on tiny-random (results.json, report, plots, resumption) and plan validation errors."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from pathlib import Path

import pytest
import yaml

from selfdistill.cli import main
from selfdistill.continual.metrics import matrix_from_results
from selfdistill.continual.plan import PlanError, load_plan
from selfdistill.continual.runner import DEMO_PLAN, DemoConfig, demo_plan

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
TINY_PLAN = """
model: tiny-random
seed: 0
train: {batch_size: 2, max_new_tokens: 4, save_every: 0}
methods:
  sft: {lr: 1.0e-3}
  sdft: {lr: 1.0e-3, teacher_template: chat-turn, skip_first_tokens: 0}
stages:
  - {task: record_json, steps: 1}
  - {task: ticket_line, steps: 1}
eval: {limit: 2, batch_size: 2, max_new_tokens: 4, prior: [prior_probe]}
"""
STAGE_DIRS = ("sft/stage1-record_json", "sft/stage2-ticket_line", "sdft/stage1-record_json", "sdft/stage2-ticket_line")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """One finished 2-stage, 2-method run: (plan file, run directory)."""
    root = tmp_path_factory.mktemp("continual")
    plan = _write(root / "plan.yaml", TINY_PLAN)
    out = root / "run"
    assert main(["continual", str(plan), "--output", str(out), "--no-progress"]) == 0
    return plan, out


def test_run_writes_results_report_and_plots(run):
    _, out = run
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "tiny-random"
    assert results["stage_tasks"] == ["record_json", "ticket_line"]
    assert results["prior_tasks"] == ["prior_probe"]
    assert list(results["methods"]) == ["sft", "sdft"]
    for method, record in results["methods"].items():
        assert record["config"]["method"] == method
        assert [s["index"] for s in record["stages"]] == [0, 1, 2]
        for stage in record["stages"]:
            assert set(stage["eval"]) == {"record_json", "ticket_line", "prior_probe"}
            assert all(entry["n"] == 2 and entry["primary"] == "acc" for entry in stage["eval"].values())
        R = matrix_from_results(results, method, results["stage_tasks"])
        assert R.shape == (3, 2) and all(math.isfinite(v) for v in R.ravel())
        assert record["stages"][1]["train_dir"] == f"{method}/stage1-record_json"
    sft, sdft = (results["methods"][m]["stages"][0] for m in ("sft", "sdft"))
    assert sft == sdft  # the base model is evaluated once and shared
    for stage_dir in STAGE_DIRS:
        assert len((out / stage_dir / "metrics.jsonl").read_text().splitlines()) == 1
        assert (out / stage_dir / "eval" / "eval.json").is_file()
        assert not (out / stage_dir / "checkpoints").exists()  # pruned once the stage finished
    report = (out / "report.md").read_text()
    assert "## sft" in report and "## sdft" in report and "record_json" in report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"accuracy_by_stage.png", "pareto.png", "matrix_sft.png", "matrix_sdft.png"} <= set(pngs)
    assert all((out / name).read_bytes().startswith(PNG) for name in pngs)


def test_rerun_skips_finished_stages_and_finishes_an_unfinished_one(run, caplog):
    plan, out = run
    watched = [out / d / name for d in STAGE_DIRS for name in ("metrics.jsonl", "trained.json", "model.safetensors")]
    before = {path: path.stat().st_mtime_ns for path in watched}
    caplog.set_level(logging.INFO)
    assert main(["continual", str(plan), "--output", str(out), "--no-progress"]) == 0
    assert {path: path.stat().st_mtime_ns for path in watched} == before  # no training happened
    assert sum("done, skipped" in r.getMessage() for r in caplog.records) == 4
    assert not any(r.getMessage().startswith("training ") for r in caplog.records)

    # a run killed after stage 2 of sdft trained but before it was evaluated: only that evaluation reruns
    results = json.loads((out / "results.json").read_text())
    results["methods"]["sdft"]["stages"].pop()
    _write(out / "results.json", json.dumps(results))
    eval_json = out / "sdft/stage2-ticket_line/eval/eval.json"
    eval_json.unlink()
    caplog.clear()
    assert main(["continual", str(plan), "--output", str(out), "--no-progress"]) == 0
    assert {path: path.stat().st_mtime_ns for path in watched} == before
    assert eval_json.is_file()
    assert [s["index"] for s in json.loads((out / "results.json").read_text())["methods"]["sdft"]["stages"]] == [
        0,
        1,
        2,
    ]


def test_rerun_with_a_changed_plan_is_refused(run, capsys):
    plan, out = run
    changed = _write(
        plan.with_name("changed.yaml"),
        TINY_PLAN.replace("steps: 1}\n  - {task: ticket", "steps: 3}\n  - {task: ticket"),
    )
    assert main(["continual", str(changed), "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different plan" in err and "stages" in err


BASE = "methods: {sft: {}}\nstages: [{task: record_json, steps: 1}]\n"
BAD_PLANS = [
    (
        "methods: {sft: {}}\nstages: [{task: record_json, steps: 1}, {task: ticket_line, steps: -3}]",
        "stages[1].steps: must be > 0",
    ),
    ("methods: {sft: {}}\nstages: [{task: no_such_task, steps: 1}]", "stages[0].task: unknown task 'no_such_task'"),
    ("methods: {sft: {}}\n", "stages: missing (required)"),
    ("stages: [{task: record_json, steps: 1}]\n", "methods: missing (required)"),
    ("methods: {sft: {}\nstages: [x", "not valid YAML at line 2"),
    (BASE + "evals: {limit: 3}\n", "evals: unknown key"),
    ("methods: {sft: {lr: -1.0}}\nstages: [{task: record_json, steps: 1}]", "methods.sft.lr: must be > 0"),
    ("methods: {sft: {lr: fast}}\nstages: [{task: record_json, steps: 1}]", "methods.sft.lr: expected a number"),
    (
        "methods: {sft: {learning_rate: 0.1}}\nstages: [{task: record_json, steps: 1}]",
        "methods.sft.learning_rate: unknown training option",
    ),
    (
        "methods: {sdft: {teacher: sometimes}}\nstages: [{task: record_json, steps: 1}]",
        "methods.sdft.teacher: expected one of",
    ),
    ("methods: {mine: {}}\nstages: [{task: record_json, steps: 1}]", "methods.mine: set 'method'"),
    ("train: {max_steps: 5}\n" + BASE, "train.max_steps: set by the plan"),
    ("methods: {sft: {}}\nstages: [{task: record_json}]", "stages[0]: give exactly one of 'steps' or 'epochs'"),
    (
        "methods: {sft: {}}\nstages: [{task: record_json, steps: 1, train: {batch_size: 0}}]",
        "stages[0].train.batch_size: must be > 0",
    ),
    ("methods: {sft: {}}\nstages: [{task: record_json, steps: 1, colour: red}]", "stages[0].colour: unknown key"),
    ("methods: {sft: {}}\nstages: [{data: missing.jsonl, test: record_json, steps: 1}]", "stages[0].data: "),
    (BASE + "eval: {prior: [prior]}\n", "eval.prior[0].task: 'prior' is a suite"),
    (BASE + "eval: {prior: [{task: prior_probe, limit: 0}]}\n", "eval.prior[0].limit: must be > 0"),
    (BASE + "eval: {prior: [record_json]}\n", "task 'record_json' appears twice"),
    ("- just a list\n", "(top level): expected a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_PLANS)
def test_bad_plans_exit_2_with_one_line_naming_the_field(text, expected, tmp_path, capsys):
    plan = _write(tmp_path / "p.yaml", text)
    assert main(["continual", str(plan), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"selfdistill: error: {plan}: ")
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_plan_merges_overrides_in_order(tmp_path):
    plan = load_plan(
        _write(
            tmp_path / "p.yaml",
            """
train: {batch_size: 4, lr: 1e-5}
methods: {sft: {lr: 3e-5}, frozen: {method: sdft, teacher: frozen}}
stages:
  - {task: record_json, steps: 2}
  - {task: ticket_line, epochs: 0.5, train: {batch_size: 2}, limit: 7}
eval: {limit: 5, prior: [prior_probe, {task: arc_easy, limit: 9}]}
""",
        )
    )
    assert plan.methods == {
        "sft": {"method": "sft", "batch_size": 4, "lr": 3e-5},
        "frozen": {"method": "sdft", "batch_size": 4, "lr": 1e-5, "teacher": "frozen"},
    }
    assert plan.train_overrides("sft", plan.stages[1]) == {"method": "sft", "batch_size": 2, "lr": 3e-5}
    assert [(s.name, s.steps, s.epochs, s.test.limit) for s in plan.stages] == [
        ("record_json", 2, None, 5),
        ("ticket_line", None, 0.5, 7),
    ]
    assert [(t.spec, t.limit) for t in plan.prior] == [("prior_probe", 5), ("arc_easy", 9)]
    assert plan.output == Path("runs/p")


def test_data_stage_is_relative_to_the_plan(tmp_path):
    rows = [{"prompt": "2+2?", "completion": "4", "answer": "4"}]
    _write(tmp_path / "facts.jsonl", "\n".join(json.dumps(r) for r in rows))
    plan = load_plan(
        _write(
            tmp_path / "p.yaml",
            "methods: {sft: {}}\nstages: [{data: facts.jsonl, test: 'facts.jsonl:number', steps: 1}]\n",
        )
    )
    stage = plan.stages[0]
    assert (stage.name, stage.data, stage.test.spec) == (
        "facts",
        str(tmp_path / "facts.jsonl"),
        f"{tmp_path / 'facts.jsonl'}:number",
    )
    with pytest.raises(PlanError, match=r"stages\[0\]\.test: missing"):
        load_plan(_write(tmp_path / "q.yaml", "methods: {sft: {}}\nstages: [{data: facts.jsonl, steps: 1}]\n"))


def test_demo_plan_is_the_example_file_and_runs_offline(tmp_path):
    assert yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text()) == yaml.safe_load(DEMO_PLAN)
    offline = demo_plan(DemoConfig(data_dir=tmp_path / "none"))
    assert [t.spec for t in offline.prior] == ["prior_probe"] and offline.model == "smollm2-135m-instruct"
    assert [s.name for s in offline.stages] == ["record_json", "ticket_line", "arith_steps"]
    assert [t.spec for t in offline.near] == [f"near_{s.name}" for s in offline.stages]
    assert {m["method"] for m in offline.methods.values()} == {"sft", "sdft"}
    assert all(m["drift"] is False for m in offline.methods.values())  # no LAMBADA there: no drift guard, said so
    quick = demo_plan(DemoConfig(quick=True))
    assert [t.limit for t in (*quick.near, *quick.prior)] == [8, 8, 8, 8]
    assert all(s.steps == 2 and s.test.limit == 8 for s in quick.stages)


def test_the_demo_keeps_the_drift_guard_where_its_text_is_found(data_dir):
    assert all("drift" not in m for m in demo_plan(DemoConfig(data_dir=data_dir)).methods.values())


def test_demo_is_a_sequence_of_the_forgetting_benchmark(monkeypatch):
    """The demo shows one of the benchmark's pre-registered sequences, with the benchmark's method options."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the scripts import their shared module as a script would
    spec = importlib.util.spec_from_file_location("forgetting", ROOT / "benchmarks" / "forgetting.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "forgetting", bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    plan = demo_plan(DemoConfig(data_dir=ROOT / "nonexistent"))
    assert tuple(s.name for s in plan.stages) in bench.SEQUENCES.values()
    for method, options in plan.methods.items():
        assert {k: v for k, v in options.items() if k in bench.METHODS[method]} == bench.METHODS[method]
