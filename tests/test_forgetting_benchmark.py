"""benchmarks/forgetting.py --jobs (the scheduler lives in benchmarks/common.py): units side by side, never two seeds
of one sequence at once."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("common")


@pytest.fixture()
def forgetting(common):
    return importlib.import_module("forgetting")


@pytest.fixture()
def where(common, tmp_path):
    return common.Where(tmp_path / "results", tmp_path / "plans")


def test_a_sequence_waits_while_another_of_its_seeds_runs(common):
    pending = [("s1", 1), ("s2", 1), ("probe", None)]
    assert common.next_unit(pending, {"s1"}) == ("s2", 1)
    assert common.next_unit(pending, {"s1", "s2"}) == ("probe", None)
    assert common.next_unit([("s1", 1)], {"s1"}) is None


def test_cores_split_evenly_and_jobs_beyond_the_cores_are_refused(common):
    assert common.core_slots(2, [0, 1]) == [[0], [1]]
    assert common.core_slots(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="--jobs 3 needs at least 3 cores"):
        common.core_slots(3, [0, 1])


def test_a_unit_runs_in_its_own_process_on_its_cores_into_the_same_results(forgetting, where):
    cmd = forgetting.unit_command(("s3", 2), 2, [1], where)
    assert cmd[cmd.index("--seeds") + 1] == "2" and cmd[cmd.index("--sequences") + 1] == "s3"
    assert cmd[cmd.index("--results") + 1] == str(where.results) and cmd[-2:] == ["--cores", "1"]
    assert cmd[cmd.index("--side-by-side") + 1] == "2"
    assert forgetting.unit_command(("probe", None), 2, [0], where)[2] == "probe"


def test_every_unit_command_parses_as_the_script_reads_it(forgetting, where):
    """The flags a unit is started with are flags of forgetting.py's own command line (one CLI, built by tyro)."""
    import tyro

    cmd = forgetting.unit_command(("s3", 2), 2, [1], where)
    args = tyro.cli(forgetting.Args, args=cmd[2:])
    assert (args.command, args.seeds, args.sequences, args.side_by_side, args.cores) == ("run", [2], ["s3"], 2, [1])
    assert args.results == where.results
    assert list(forgetting.SEQUENCES) == list(forgetting.SequenceName.__args__)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_side_by_side_runs_every_unit_two_at_a_time_and_one_seed_of_a_sequence_at_a_time(common, where):
    # each fake unit records when it ran, on which cores and with how many threads, then sleeps a little
    where.results.mkdir(parents=True)
    trace = where.results / "trace.jsonl"
    script = (
        "import json, os, sys, time; t0 = time.time(); time.sleep(0.6); "
        f"open({str(trace)!r}, 'a').write(json.dumps({{'unit': sys.argv[1], 'start': t0, 'end': time.time(), "
        "'cores': sorted(os.sched_getaffinity(0)), 'threads': os.environ['OMP_NUM_THREADS']}) + '\\n')"
    )

    def fake_command(unit, jobs, cores):  # the child pins itself, as forgetting.py's main does with --cores
        pin = f"import os; os.sched_setaffinity(0, {cores}); "
        return [sys.executable, "-c", pin + script, f"{unit[0]}/{unit[1]}"]

    units = [("s1", 0), ("s2", 0), ("s1", 1), ("s2", 1), ("probe", None)]
    common.run_side_by_side(units, 2, fake_command, where.results)
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
    span = json.loads((where.results / "wall_times.jsonl").read_text().splitlines()[-1])
    assert span["span"] is True and span["side_by_side"] == 2 and span["what"].startswith("5 units")


def test_a_failed_unit_stops_the_span_with_its_name_after_the_others_finish(common, where, monkeypatch):
    def fake_command(unit, jobs, cores):
        return [sys.executable, "-c", f"import sys; print('boom'); sys.exit({int(unit[0] == 's2')})"]

    monkeypatch.setattr(common, "core_slots", lambda jobs, cores: [[0], [0]])
    with pytest.raises(SystemExit, match=r"1 unit\(s\) failed: \[\('s2', 0\)\]"):
        common.run_side_by_side([("s1", 0), ("s2", 0), ("s3", 0)], 2, fake_command, where.results)
    assert (where.results / "logs" / "s2_seed0.log").read_text() == "boom\n"


def test_another_results_directory_keeps_its_own_plans(forgetting, tmp_path):
    committed = forgetting.COMMITTED
    other = committed.elsewhere(tmp_path / "elsewhere")
    assert other.results == (tmp_path / "elsewhere").resolve()
    assert other.plans == other.results / "plans" != committed.plans
    assert committed.elsewhere(committed.results) is committed and committed.elsewhere(None) is committed
    lrs = {"sft": 3e-5, "sdft": 1e-4, "seqkd": 3e-5}
    plan = forgetting.sequence_plan("s2", lrs, other)  # written beside the other results, naming them
    assert plan.parent == other.plans and f"output: {other.results / 's2'}" in plan.read_text()


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
