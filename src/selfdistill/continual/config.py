"""The configs of ``selfdistill continual``, ``demo`` and ``report``, apart from the code that runs them.

    cfg = ContinualConfig(plan=Path("examples/tiny.yaml"), output=Path("runs/tiny"))

Kept free of torch and matplotlib, so ``--help`` and flag errors come back at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tyro

from selfdistill.config import TrackerName


@dataclass
class ContinualConfig:
    """Run a plan of sequential training stages for each method; evaluate after every stage; write a report."""

    plan: tyro.conf.Positional[Path]
    """The plan file (YAML): model, methods, stages, evaluation suite (see docs/continual.md)."""
    output: Path | None = None
    """Run directory (default: the plan's `output`)."""
    overwrite: bool = False
    """Start over: delete this plan's results and stage directories in the output first."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ... (auto: cuda when available)."""
    prune_checkpoints: bool = True
    """Delete a finished stage's training checkpoints (its final model stays; only unfinished stages resume)."""
    progress: bool = True
    """Progress bars for training and evaluation."""
    keep_models: bool = True
    """Keep every stage's trained model (False: delete a stage's weights once the next stage is recorded, and a
    run's last weights once the run is done, keeping metrics, configs and evaluations; for long benchmarks)."""
    only_seeds: list[int] | None = None
    """Run only the runs of these seeds now (the others stay pending; results.json and the report hold what is done)."""
    report_to: list[TrackerName] = field(default_factory=list)
    """Also log each run's stage evaluations, accuracy matrix and plots to these trackers (added to the plan's
    `report_to`): tensorboard (OUTPUT/<run>/tensorboard), trackio (local), wandb."""


@dataclass
class DemoConfig:
    """The offline demo: SFT vs SDFT on the embedded model over three project-generated skills, then a report."""

    output: Path = Path("runs/demo")
    """Run directory."""
    overwrite: bool = False
    """Start over instead of resuming a previous demo in the same directory."""
    quick: bool = False
    """A smoke version (few steps, few eval items): checks the pipeline in minutes; numbers mean little."""
    data_dir: Path | None = None
    """Where registered data sets live (the demo's tasks are all project-generated and need none)."""
    device: str = "auto"
    progress: bool = True
    report_to: list[TrackerName] = field(default_factory=list)
    """Also log each run's stage evaluations, accuracy matrix and plots to these trackers (as `continual`)."""


@dataclass
class ReportConfig:
    """Write report.md and PNG plots for a continual run directory (from results.json and metrics.jsonl)."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory: the output of `selfdistill continual` (holds results.json)."""
