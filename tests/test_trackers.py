"""Trackers read back: TensorBoard's event files and trackio's local store hold every metrics.jsonl key with its
step; a tracker that fails never stops training; a missing one is one line and exit 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from selfdistill.cli import main
from selfdistill.config import TrainConfig
from selfdistill.training.loop import train

FAST = {"model": "tiny-random", "batch_size": 2, "max_new_tokens": 8, "progress": False, "max_steps": 2}


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _scalar_keys(rows: list[dict]) -> set[str]:
    return {k for r in rows for k, v in r.items() if k != "step" and isinstance(v, int | float)}


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_events_hold_every_metrics_key(tmp_path, small_jsonl):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(
        TrainConfig.from_mapping(
            dict(data=str(small_jsonl), output=tmp_path / "run", report_to=["tensorboard"], **FAST)
        )
    )
    rows = _metrics(out)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert _scalar_keys(rows) <= tags and "loss" in tags
    logged = {e.step: e.value for e in events.Scalars("loss")}
    assert logged == pytest.approx({r["step"]: r["loss"] for r in rows})


@pytest.mark.skipif(importlib.util.find_spec("trackio") is None, reason="trackio not installed")
def test_trackio_local_store_holds_every_metrics_key(tmp_path, small_jsonl, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("TRACKIO_PROJECT", "selfdistill-test")
    import trackio.utils

    monkeypatch.setattr(trackio.utils, "TRACKIO_DIR", tmp_path / "trackio", raising=False)
    from trackio.sqlite_storage import SQLiteStorage

    monkeypatch.setattr(
        SQLiteStorage, "get_project_db_path", staticmethod(lambda project: tmp_path / "trackio" / f"{project}.db")
    )
    out = train(
        TrainConfig.from_mapping(dict(data=str(small_jsonl), output=tmp_path / "tk-run", report_to=["trackio"], **FAST))
    )
    logs = SQLiteStorage.get_logs("selfdistill-test", "tk-run")
    assert [entry["step"] for entry in logs] == [1, 2]
    rows = _metrics(out)
    assert _scalar_keys(rows) <= set(logs[0])
    assert [entry["loss"] for entry in logs] == pytest.approx([r["loss"] for r in rows])


def test_a_failing_tracker_warns_once_and_training_goes_on(tmp_path, small_jsonl, monkeypatch, caplog):
    from selfdistill.training import trackers

    class Broken:
        def __init__(self, *_args) -> None:
            pass

        def log(self, metrics, step) -> None:
            raise ConnectionError("no network")

        def close(self) -> None:
            pass

    monkeypatch.setitem(trackers.TRACKERS, "tensorboard", Broken)
    monkeypatch.setattr(trackers, "require", lambda names: None)
    out = train(
        TrainConfig.from_mapping(
            dict(data=str(small_jsonl), output=tmp_path / "run", report_to=["tensorboard"], **FAST)
        )
    )
    assert [r["step"] for r in _metrics(out)] == [1, 2]
    warnings = [r.message for r in caplog.records if "report-to tensorboard" in r.message]
    assert len(warnings) == 1 and "no network" in warnings[0]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_missing_tracker_is_one_line_exit_2_and_nothing_written(tmp_path, small_jsonl, capsys):
    code = main(
        [
            "train",
            "--data",
            str(small_jsonl),
            "--model",
            "tiny-random",
            "--report-to",
            "wandb",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == ["selfdistill: error: report-to: wandb is not installed; pip install wandb"]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_eval_reports_every_task_metric_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "eval" / "results.json"
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny-random",
                "--tasks",
                "record_json",
                "--limit",
                "2",
                "--output",
                str(out),
                "--report-to",
                "tensorboard",
            ]
        )
        == 0
    )
    events = EventAccumulator(str(out.parent / "tensorboard"))
    events.Reload()
    results = json.loads(out.read_text())["results"]
    expected = {f"eval/record_json/{m}" for m in results["record_json"]["metrics"]}
    assert expected <= set(events.Tags()["scalars"])


def test_eval_report_to_without_output_is_refused(capsys):
    assert main(["eval", "--model", "tiny-random", "--tasks", "record_json", "--report-to", "tensorboard"]) == 2
    assert "report-to: needs --output" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("trackio") is None, reason="trackio not installed")
def test_trackio_takes_tables_images_and_markdown(tmp_path, monkeypatch):
    import trackio.utils
    from trackio.sqlite_storage import SQLiteStorage

    from selfdistill.training.trackers import Trackers

    monkeypatch.setenv("TRACKIO_PROJECT", "selfdistill-media")
    monkeypatch.setattr(trackio.utils, "TRACKIO_DIR", tmp_path / "trackio", raising=False)
    monkeypatch.setattr(
        SQLiteStorage, "get_project_db_path", staticmethod(lambda project: tmp_path / "trackio" / f"{project}.db")
    )
    png = tmp_path / "plot.png"
    from PIL import Image

    Image.new("RGB", (8, 4), "red").save(png)
    with Trackers.open(["trackio"], tmp_path, "media", {}) as tracked:
        tracked.log_table("matrix", ["after", "a"], [["base", 0.5], ["after a", None]], step=1)
        tracked.log_image("plots/matrix", png, step=1)
        tracked.log_text("report", "# report", step=1)
        assert list(tracked.live) == ["trackio"]
    logged = {k: v for entry in SQLiteStorage.get_logs("selfdistill-media", "media") for k, v in entry.items()}
    assert logged["matrix"]["_value"] == [{"after": "base", "a": 0.5}, {"after": "after a", "a": None}]
    assert logged["plots/matrix"]["_type"] == "trackio.image" and logged["report"]["_value"] == "# report"


def test_a_tracker_without_a_media_type_skips_it_and_stays(tmp_path, caplog):
    from selfdistill.training import trackers

    class ScalarsOnly:
        def __init__(self, *_args) -> None:
            self.steps: list[int] = []

        def log(self, metrics, step) -> None:
            self.steps.append(step)

        def close(self) -> None:
            pass

    tracked = trackers.Trackers({"scalars": ScalarsOnly()})
    tracked.log_image("plots/x", tmp_path / "x.png", step=1)
    tracked.log_table("matrix", ["a"], [[1.0]], step=1)
    tracked.log({"loss": 1.0}, step=2)
    assert tracked.live["scalars"].steps == [2] and not caplog.records
