"""benchmarks/forgetting.py --jobs: units side by side, never two seeds of one sequence at once."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def forgetting(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = importlib.import_module("forgetting")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "PLANS", tmp_path / "plans")
    return module


def test_a_sequence_waits_while_another_of_its_seeds_runs(forgetting):
    pending = [("s1", 1), ("s2", 1), ("probe", None)]
    assert forgetting.next_unit(pending, {"s1"}) == ("s2", 1)
    assert forgetting.next_unit(pending, {"s1", "s2"}) == ("probe", None)
    assert forgetting.next_unit([("s1", 1)], {"s1"}) is None


def test_cores_split_evenly_and_jobs_beyond_the_cores_are_refused(forgetting):
    assert forgetting.core_slots(2, [0, 1]) == [[0], [1]]
    assert forgetting.core_slots(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="--jobs 3 needs at least 3 cores"):
        forgetting.core_slots(3, [0, 1])


def test_a_unit_runs_in_its_own_process_on_its_cores_into_the_same_results(forgetting):
    cmd = forgetting.unit_command(("s3", 2), 2, [1])
    assert cmd[cmd.index("--seeds") + 1] == "2" and cmd[cmd.index("--sequences") + 1] == "s3"
    assert cmd[cmd.index("--results") + 1] == str(forgetting.RESULTS) and cmd[-2:] == ["--cores", "1"]
    assert cmd[cmd.index("--side-by-side") + 1] == "2"
    assert forgetting.unit_command(("probe", None), 2, [0])[2] == "probe"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_side_by_side_runs_every_unit_two_at_a_time_and_one_seed_of_a_sequence_at_a_time(forgetting, monkeypatch):
    # each fake unit records when it ran, on which cores and with how many threads, then sleeps a little
    trace = forgetting.RESULTS / "trace.jsonl"
    script = (
        "import json, os, sys, time; t0 = time.time(); time.sleep(0.6); "
        f"open({str(trace)!r}, 'a').write(json.dumps({{'unit': sys.argv[1], 'start': t0, 'end': time.time(), "
        "'cores': sorted(os.sched_getaffinity(0)), 'threads': os.environ['OMP_NUM_THREADS']}) + '\\n')"
    )

    def fake_command(unit, jobs, cores):  # the child pins itself, as forgetting.py's main does with --cores
        pin = f"import os; os.sched_setaffinity(0, {cores}); "
        return [sys.executable, "-c", pin + script, f"{unit[0]}/{unit[1]}"]

    monkeypatch.setattr(forgetting, "unit_command", fake_command)
    units = [("s1", 0), ("s2", 0), ("s1", 1), ("s2", 1), ("probe", None)]
    forgetting.run_side_by_side(units, 2)
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted(r["unit"] for r in rows) == sorted(f"{n}/{s}" for n, s in units)
    assert all(len(r["cores"]) == 1 and r["threads"] == "1" for r in rows)
    by_unit = {r["unit"]: r for r in rows}
    for seq in ("s1", "s2"):  # seed 1 of a sequence starts only after its seed 0 ended
        assert by_unit[f"{seq}/1"]["start"] >= by_unit[f"{seq}/0"]["end"]
    overlapping = [
        (a["unit"], b["unit"])
        for a in rows
        for b in rows
        if a["unit"] < b["unit"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping and all(by_unit[a]["cores"] != by_unit[b]["cores"] for a, b in overlapping)
    span = json.loads((forgetting.RESULTS / "wall_times.jsonl").read_text().splitlines()[-1])
    assert span["span"] is True and span["side_by_side"] == 2 and span["what"].startswith("5 units")


def test_a_failed_unit_stops_the_span_with_its_name_after_the_others_finish(forgetting, monkeypatch):
    def fake_command(unit, jobs, cores):
        return [sys.executable, "-c", f"import sys; print('boom'); sys.exit({int(unit[0] == 's2')})"]

    monkeypatch.setattr(forgetting, "unit_command", fake_command)
    monkeypatch.setattr(forgetting, "core_slots", lambda jobs, cores: [[0], [0]])
    with pytest.raises(SystemExit, match=r"1 unit\(s\) failed: \[\('s2', 0\)\]"):
        forgetting.run_side_by_side([("s1", 0), ("s2", 0), ("s3", 0)], 2)
    assert (forgetting.RESULTS / "logs" / "s2_seed0.log").read_text() == "boom\n"


def test_another_results_directory_keeps_its_own_plans(forgetting, tmp_path):
    committed_plans = forgetting.PLANS
    forgetting.use_results(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere").resolve() == forgetting.RESULTS
    assert forgetting.PLANS == forgetting.RESULTS / "plans" != committed_plans


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_more_jobs_than_cores_is_refused_before_anything_runs(tmp_path):
    import subprocess

    jobs = len(os.sched_getaffinity(0)) + 1
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "forgetting.py"),
            "--jobs",
            str(jobs),
            "--results",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and f"--jobs {jobs} needs at least {jobs} cores" in out.stderr
    assert not (tmp_path / "r").exists()
