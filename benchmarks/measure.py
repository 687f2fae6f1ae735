"""What the step-timing and memory benchmarks share: a process's peak RSS, medians over the steps of several runs,
resuming a results file, and the commit that measured. Standard library only, so that code run by another
interpreter (TRL's venv, ``.venv-vllm``, or a child process started with ``python -c``) imports it too.

    from measure import vm_hwm_mib, summarize_runs, previous_runs
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

PHASES = ("rollout", "teacher", "student", "tis", "diagnostics", "optimizer", "ema", "sync")
"""The phases of a training step in the order it runs them (``seconds_<phase>`` in metrics.jsonl)."""


def vm_hwm_mib() -> float:
    """This process's peak resident set so far (Linux ``VmHWM``)."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def summarize_runs(mine: list[dict]) -> dict:
    """Medians over the steps of several runs of one kind, each run's first step dropped as warm-up.

    A run is ``{"steps": [{"seconds", "completion_tokens", "seconds_<phase>"...}], "peak_rss_mib"}``."""
    kept = [s for r in mine for s in r["steps"][1:]]
    seen = {k.removeprefix("seconds_") for s in kept for k in s if k.startswith("seconds_")}
    phases = [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))
    return {
        "median_s_per_step": statistics.median(s["seconds"] for s in kept),
        "round_medians": [statistics.median(s["seconds"] for s in r["steps"][1:]) for r in mine],
        "completion_tokens_per_s": sum(s["completion_tokens"] for s in kept) / sum(s["seconds"] for s in kept),
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in mine),
        "round_peak_rss_mib": [r["peak_rss_mib"] for r in mine],
        "phase_median_s": {p: statistics.median(s.get(f"seconds_{p}", 0.0) for s in kept) for p in phases},
        "steps_kept": len(kept),
    }


def previous_runs(path: Path, settings: dict, fresh: bool) -> list[dict]:
    """The runs a results file already holds for the same settings (so a rerun resumes), or none."""
    old = {} if fresh or not path.is_file() else json.loads(path.read_text())
    if old and old.get("settings") != settings:
        print(f"{path}: written with other settings; starting over")
        return []
    return old.get("runs", [])


def git_commit(where: Path) -> str:
    """The short hash of the commit checked out at ``where`` ('' outside a git tree)."""
    done = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()
