"""What the benchmark scripts share: plans written as YAML and run through ``selfdistill continual``, the ``--jobs``
scheduler, results directories, wall times and the CPU that ran them, markdown tables and the learning-vs-retention
plot. Scripts import this module; none imports another script's underscore names.

    from common import Where, write_plan, run_plan_file, log_time, md_table
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from selfdistill.environment import cpu_model
from selfdistill.markdown import table

ROOT = Path(__file__).resolve().parent
RESULTS_ROOT = ROOT / "results"
PLAN_HEADER = "# Written by {script}; run it with that script (or selfdistill continual).\n"

log = logging.getLogger("benchmarks")

Unit = tuple[str, int | None]
"""One piece of work run in its own process: (sequence name or ``probe``, seed or None)."""


@dataclass(frozen=True)
class Where:
    """Where a benchmark reads and writes; passed down instead of module globals rewritten at run time."""

    results: Path
    """The results directory (run directories, summaries, wall times)."""
    plans: Path
    """Where the plans the script writes go; the committed plans name the committed results directory."""

    def elsewhere(self, path: Path | None) -> Where:
        """``path`` instead of these results; a directory other than these keeps its plans in ``path/plans`` so
        that the committed plans (which name the committed output) stay as they are."""
        if path is None or Path(path).resolve() == self.results.resolve():
            return self
        path = Path(path).resolve()
        return Where(path, path / "plans")


def usage_error(prog: str, message: str) -> None:
    """Exit 2 with one line, as argparse and tyro do for a bad command line."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when there is no such file."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- plans and runs


def write_plan(
    plans: Path, name: str, raw: Mapping[str, Any], comment: str, script: str = "benchmarks/forgetting.py"
) -> Path:
    """``plans/<name>.yaml`` holding ``raw`` under a comment; left untouched when it already says the same."""
    text = f"# {comment}\n{PLAN_HEADER.format(script=script)}" + yaml.safe_dump(dict(raw), sort_keys=False)
    return write_if_changed(plans / f"{name}.yaml", text)


def write_if_changed(path: Path, text: str) -> Path:
    """``text`` into ``path``, left untouched when it already holds it (a committed file keeps its timestamp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def plan_output(path: Path) -> Path:
    """The run directory a plan file names (its ``output`` key)."""
    return Path(yaml.safe_load(Path(path).read_text(encoding="utf-8"))["output"])


def selfdistill(argv: list[str]) -> None:
    """``selfdistill ARGV`` in this process (its command line is the library's stable surface); exits on failure."""
    from selfdistill.cli import main

    if code := main(argv):
        sys.exit(f"selfdistill {' '.join(argv)} failed (exit {code})")


def continual(path: Path, seeds: list[int] | None) -> None:
    """``selfdistill continual PLAN`` without progress bars, deleting weights no later stage needs."""
    selfdistill(
        [
            "continual",
            str(path),
            "--no-progress",
            "--no-keep-models",
            *(["--only-seeds", *map(str, seeds)] if seeds else []),
        ]
    )


def run_plan_file(path: Path, seeds: list[int] | None = None, runner: Callable = continual) -> bool:
    """Run or resume the plan at ``path``, then digest what its stages left on disk; True when a stage was trained
    or evaluated (a resume that finds every stage done only rewrites the report, and its few seconds are no wall
    time worth recording)."""
    from digest import write_digest

    record = plan_output(path) / "results.json"
    before = record.read_bytes() if record.is_file() else None
    runner(path, list(seeds) if seeds else None)
    after = record.read_bytes() if record.is_file() else None
    if after is not None:
        write_digest(record.parent)
    return after != before


def shrink_to_smoke(raw: dict[str, Any], prior: list[dict[str, Any]]) -> None:
    """The pipeline, not the numbers: one step of everything on the tiny random model, evaluated on 2 items."""
    raw["model"] = "tiny-random"
    raw["train"] |= {"batch_size": 2, "max_new_tokens": 6}
    raw["methods"] = {k: {**v, "anchor_batch_size": 2} if "anchor" in v else v for k, v in raw["methods"].items()}
    raw["stages"] = [{**s, "steps": 1} for s in raw["stages"]]
    raw["eval"] |= {"limit": 2, "batch_size": 2, "max_new_tokens": 8}
    raw["eval"]["prior"] = prior


# ---------------------------------------------------------------- wall times and machines


def log_time(what: str, start: float, results: Path, **extra: Any) -> None:
    """One line in ``results/wall_times.jsonl``: what finished, how long it took, and on which CPU (``extra``: how
    it ran, e.g. ``side_by_side=2, threads=1``)."""
    line = {
        "what": what,
        "seconds": round(time.perf_counter() - start, 1),
        "cpu": cpu_model(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }
    results.mkdir(parents=True, exist_ok=True)
    with (results / "wall_times.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    log.info("%s: %.0f s", what, line["seconds"])


def machines_line(results: Path, prefix: str = "") -> str:
    """Which CPU ran each sequence and seed (from ``results/wall_times.jsonl``, the lines whose ``what`` starts with
    ``prefix``): pairs within a seed share a machine."""
    path = results / "wall_times.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    by_cpu: dict[str, list[str]] = {}
    for line in lines:
        if line["what"] != "tune" and not line.get("span") and line["what"].startswith(prefix):
            by_cpu.setdefault(line["cpu"], []).append(line["what"])
    if not by_cpu:
        return f"CPU: {cpu_model()}"
    return "CPUs: " + "; ".join(f"{cpu}: {', '.join(runs)}" for cpu, runs in by_cpu.items())


# ---------------------------------------------------------------- units side by side (--jobs)


def next_unit(pending: list[Unit], running: set[str]) -> Unit | None:
    """The first pending unit whose sequence is not running: two seeds of one sequence write one results.json (and
    the first computes the base model's scores that the others reuse), so they never run at the same time."""
    return next((unit for unit in pending if unit[0] not in running), None)


def usable_cores() -> list[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def core_slots(jobs: int, cores: list[int]) -> list[list[int]]:
    """``jobs`` disjoint groups of the cores this process may use, as even as they divide (at least one core each)."""
    if jobs > len(cores):
        raise ValueError(f"--jobs {jobs} needs at least {jobs} cores; this process may use {len(cores)}")
    per = len(cores) // jobs
    return [cores[i * per : (i + 1) * per] for i in range(jobs)]


def pin_to(cores: list[int] | None) -> None:
    """Run this process on ``cores`` (before the first parallel region starts its threads)."""
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)


@dataclass
class _Running:
    unit: Unit
    slot: int
    start: float
    log: Path


def _start(unit: Unit, slot: list[int], command: list[str], logs: Path) -> tuple[subprocess.Popen, Path]:
    name = unit[0] if unit[1] is None else f"{unit[0]}_seed{unit[1]}"
    env = {**os.environ, "OMP_NUM_THREADS": str(len(slot)), "MKL_NUM_THREADS": str(len(slot))}
    path = logs / f"{name}.log"
    with path.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, path


def _reap(running: dict[subprocess.Popen, _Running], failed: list[Unit]) -> None:
    for proc, r in list(running.items()):
        if proc.poll() is None:
            continue
        del running[proc]
        minutes = (time.perf_counter() - r.start) / 60
        if proc.returncode:
            failed.append(r.unit)
            tail = "\n".join(r.log.read_text().splitlines()[-5:])
            log.error(
                "%s failed (exit %d) after %.1f min; the end of %s:\n%s", r.unit, proc.returncode, minutes, r.log, tail
            )
        else:
            log.info("finished %s in %.1f min", r.unit, minutes)


def run_side_by_side(
    units: list[Unit], jobs: int, command: Callable[[Unit, int, list[int]], list[str]], results: Path
) -> None:
    """Run the units ``jobs`` at a time, each in its own process (``command(unit, jobs, cores)``) pinned to its own
    cores with as many threads.

    The arithmetic does not change with the thread count (fp32: on one machine, s2 seed 0 run with 1 thread beside
    another unit and with 2 threads alone agreed in all 132 evaluation cells, docs/science.md); what changes is the
    wall time: two 1-core processes got 1.34x the throughput of one 2-thread process there. Each unit's output goes to
    ``results/logs/``; the whole span is one line in ``wall_times.jsonl``."""
    slots = core_slots(jobs, usable_cores())
    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(units), {}, []
    start = time.perf_counter()
    while pending or running:
        free = [slot for slot in range(jobs) if slot not in {r.slot for r in running.values()}]
        while free and (unit := next_unit(pending, {r.unit[0] for r in running.values()})):
            pending.remove(unit)
            slot = free.pop(0)
            proc, path = _start(unit, slots[slot], command(unit, jobs, slots[slot]), logs)
            running[proc] = _Running(unit, slot, time.perf_counter(), path)
            log.info("started %s on cores %s (%d pending)", path.stem, slots[slot], len(pending))
        if not running:
            break
        time.sleep(2)
        _reap(running, failed)
    what = " ".join(f"{n} seed {s}" if s is not None else n for n, s in units)
    log_time(f"{len(units)} units, {jobs} side by side: {what}", start, results, span=True, side_by_side=jobs)
    if failed:
        sys.exit(f"{len(failed)} unit(s) failed: {failed}; their logs are in {logs}; a rerun resumes them")


# ---------------------------------------------------------------- tables


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (no trailing newline): ``selfdistill.markdown.table``'s lines joined."""
    return "\n".join(table(header, rows))


def pm(value: tuple[float, float, int]) -> str:
    """``mean ± std`` of ``metrics.mean_std``'s triple; ``(n=1)`` where the std is undefined, ``—`` for nothing."""
    mean, std, n = value
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f} (n={n})"


def diff(d: Mapping[str, float]) -> str:
    """A paired difference (``metrics.paired_difference``) as ``mean [lo, hi]``."""
    if not math.isfinite(d["mean"]):
        return "—"
    if not math.isfinite(d["lo"]):
        return f"{d['mean']:+.3f} (n={d['n']})"
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


# ---------------------------------------------------------------- plots


def _errorbars(ax, points: Mapping[str, dict], end: str, settings: list[str], highlight: str | None) -> None:
    from selfdistill.continual.metrics import mean_std

    for k, values in points.items():
        x, x_std, _ = mean_std(list(values[end].values()))
        y, y_std, n = mean_std(list(values["acc"].values()))
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        ax.errorbar(
            [x],
            [y],
            xerr=x_std if n > 1 else None,
            yerr=y_std if n > 1 else None,
            capsize=3,
            marker="*" if k == highlight else "o",
            markersize=10 if k == highlight else 7,
            linestyle="none",
            color=f"C{settings.index(k) % 10}",
            label=f"{k} (n={n})",
        )


def plot_sequences(
    seqs: Mapping[str, Mapping[str, dict]],
    path: Path,
    title: str,
    stages: Mapping[str, tuple[str, ...]],
    highlight: str | None = None,
) -> None:
    """Learning against retention, one column per sequence: ACC at the end against the prior suite's average (top
    row) and the near-prior average (bottom row), mean ± std over each setting's finished seeds; the dashed line is
    the base model. ``seqs``: sequence → setting → scalar → seed → value (``aggregate``'s per_seed); ``stages``:
    sequence → its stage tasks (the column titles)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(seqs)
    settings = list(dict.fromkeys(k for by_setting in seqs.values() for k in by_setting))
    figure = Figure(figsize=(3.4 * len(names), 6.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(names), squeeze=False)
    rows = (("prior_end", "prior_drop", "prior suite"), ("near_end", "near_drop", "near-prior tasks"))
    for col, name in enumerate(names):
        for row, (end, drop, label) in enumerate(rows):
            ax = axes[row][col]
            _errorbars(ax, seqs[name], end, settings, highlight)
            bases = [v[end][seed] + v[drop][seed] for v in seqs[name].values() for seed in v[end]]
            if bases:  # the base model's average (end + drop), the same for every run of the sequence
                ax.axvline(sum(bases) / len(bases), color="0.5", linestyle="--", linewidth=1)
            ax.set_xlabel(f"{label}: average at end")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("ACC at end")
            if row == 0:
                ax.set_title(f"{name}: {' → '.join(stages.get(name, ()))}", fontsize=9)
                if seqs[name]:
                    ax.legend(fontsize=7, loc="best")
    figure.suptitle(
        f"{title}: ACC against what was kept, mean ± std over n seeds (dashed: the base model; up and right is better)"
    )
    figure.savefig(path, dpi=110)
