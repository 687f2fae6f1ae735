"""results.json through its dataclasses: every committed file loads, complete files read back byte for byte, and the
fields the runner relies on (a run's setting and seed) survive the JSON boundary."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from selfdistill.continual.metrics import aggregate, settings_of
from selfdistill.continual.results import (
    RESULTS_VERSION,
    Results,
    ResultsError,
    StageRecord,
    TaskScore,
    TrainingEval,
    load_results,
)
from selfdistill.fileio import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "results_small"


def _committed() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*results.json"], cwd=ROOT, capture_output=True, text=True).stdout
    return [ROOT / line for line in listed.splitlines() if line.endswith("/results.json")]


def test_every_committed_results_file_loads():
    paths = _committed()
    assert FIXTURE / "results.json" in paths and len(paths) >= 2
    for path in paths:
        results = Results.load(path.parent)
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert list(results.runs) == list(raw["methods"]), path
        assert results.stage_tasks == raw["stage_tasks"]
        for label, run in results.runs.items():
            assert run.setting == raw["methods"][label].get("setting", label)
            assert run.seed == raw["methods"][label].get("seed")
            assert [s.index for s in run.stages] == [s["index"] for s in raw["methods"][label]["stages"]]


def test_complete_files_read_back_as_written():
    """Files the runner wrote (every field present) come back from ``to_json`` unchanged, key order included."""
    complete = [p for p in _committed() if "settings" in json.loads(p.read_text(encoding="utf-8"))]
    assert complete, "no committed results.json has every field"
    for path in complete:
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert json.dumps(Results.load(path.parent).to_json()) == json.dumps(raw), path


def test_a_file_from_before_settings_and_seeds_gets_their_defaults():
    results = Results.load(FIXTURE)
    assert results.version == 1 and results.near_tasks == [] and results.settings == []
    assert results.eval_split == "test"
    assert [(r.setting, r.seed, r.method) for r in results.runs.values()] == [
        ("sft", None, "sft"),
        ("sdft", None, "sdft"),
    ]
    assert settings_of(results) == {"sft": ["sft"], "sdft": ["sdft"]}
    assert aggregate(results)["sdft"]["seeds"] == {0: "sdft"}  # numbered by its place among its setting's runs
    score = results.runs["sft"].stages[0].eval["arc_easy"]
    assert (score.primary, score.value(), score.value("stderr")) == ("acc_norm", 0.40, 0.069)
    assert score.metrics["acc"] == 0.38 and score.seconds is None
    assert load_results(FIXTURE)["methods"]["sft"]["setting"] == "sft"  # the plain view has the defaults too


def test_seed_and_setting_survive_a_save(tmp_path: Path):
    """A seeded, swept run keeps its setting and seed (not its position) through save and load."""
    raw = json.loads((FIXTURE / "results.json").read_text(encoding="utf-8"))
    sft = raw["methods"]["sft"]
    raw["methods"] = {
        "sft[lr=1e-4]@seed7": {**sft, "setting": "sft[lr=1e-4]", "seed": 7},
        "sft[lr=1e-4]@seed3": {**sft, "setting": "sft[lr=1e-4]", "seed": 3},
    }
    Results.from_json(raw).save(tmp_path)
    back = Results.load(tmp_path)
    assert [(r.setting, r.seed) for r in back.runs.values()] == [("sft[lr=1e-4]", 7), ("sft[lr=1e-4]", 3)]
    assert aggregate(back)["sft[lr=1e-4]"]["seeds"] == {7: "sft[lr=1e-4]@seed7", 3: "sft[lr=1e-4]@seed3"}
    assert back.version == RESULTS_VERSION and not (tmp_path / ".results.json.tmp").exists()


def test_evaluation_during_training_has_its_place_and_is_written_only_when_set():
    base = StageRecord(0, "base", None, None, 0.0, {"a": TaskScore({"acc": 0.5}, {"acc": 0.1}, 10, "acc", 1.5)})
    assert "kept_step" not in base.to_json() and "training_evals" not in base.to_json()
    stage = StageRecord(
        1,
        "a",
        "a",
        "sft/stage1-a",
        12.0,
        {},
        kept_step=20,
        training_evals=[TrainingEval(10, 0.4, {"prior_probe": 0.8}), TrainingEval(20, 0.6, {"prior_probe": 0.78})],
    )
    assert StageRecord.from_json(json.loads(json.dumps(stage.to_json()))) == stage
    assert StageRecord.from_json(base.to_json()) == base


def test_a_newer_schema_or_a_bad_field_is_a_one_line_error(tmp_path: Path):
    raw = json.loads((FIXTURE / "results.json").read_text(encoding="utf-8"))
    write_json_atomic(tmp_path / "results.json", {**raw, "version": RESULTS_VERSION + 1})
    with pytest.raises(ResultsError, match="schema version 2 is newer"):
        Results.load(tmp_path)
    raw["methods"]["sft"]["stages"][0]["train_seconds"] = "slow"
    write_json_atomic(tmp_path / "results.json", raw)
    with pytest.raises(ResultsError, match=r"methods\.sft: cannot read a stage") as error:
        Results.load(tmp_path)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)
