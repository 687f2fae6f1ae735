"""The configs of ``selfdistill eval`` and ``selfdistill probe``, apart from the engines that run them.

    cfg = EvalConfig(model="tiny-random", tasks=["arc_easy"], limit=20)

Kept free of torch and transformers, so ``--help`` and flag errors come back at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from selfdistill import DEFAULT_MODEL
from selfdistill.config import RolloutName, TrackerName
from selfdistill.training.prompts import TEACHER_TEMPLATES, resolve_template


@dataclass
class EvalConfig:
    """Evaluate a model on tasks and suites: ``selfdistill eval --tasks prior --limit 200 --output results.json``."""

    model: str = DEFAULT_MODEL
    """Model spec: smollm2-135m-instruct, tiny-random, a model or training-output directory, or a hub id."""
    tasks: list[str] = field(default_factory=lambda: ["prior"])
    """Task names, suites (prior = the prior-capability set) or PATH.jsonl[:scorer] user tasks."""
    limit: int | None = None
    """Evaluate a fixed seeded subset of at most this many items per task (all items when unset)."""
    output: Path | None = None
    """Results JSON file; per-item predictions go beside it as <stem>.predictions.jsonl."""
    data_dir: Path | None = None
    """Directory of the evaluation data sets (default: $SELFDISTILL_DATA, else ../shared/data)."""
    batch_size: int = 16
    """Requests (log-likelihood) or prompts (generation) per forward batch."""
    seed: int = 0
    """Seed of the ``limit`` subset."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps."""
    trust_remote_code: bool = False
    """Allow custom model code from the model directory or hub."""
    rollout: RolloutName = "hf"
    """Engine for generation tasks: hf (model.generate) or vllm (greedy, fp32, in process)."""
    report_to: list[TrackerName] = field(default_factory=list)
    """Also log every task's metrics to these trackers (tensorboard beside --output, trackio, wandb)."""

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str) or not self.tasks or not all(self.tasks):
            raise ValueError(f"tasks: expected a non-empty list of task names, got {self.tasks!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit: must be >= 1 or unset, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.report_to and self.output is None:
            raise ValueError("report-to: needs --output (tracker files go beside the results file)")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device: {self.device!r} is not auto, cpu, cuda, cuda:N or mps")
        self.output = Path(self.output) if self.output is not None else None
        self.data_dir = Path(self.data_dir) if self.data_dir is not None else None


@dataclass
class ProbeConfig:
    """ICL-gap pre-flight: teacher (demonstration in context) vs student (without), for each teacher template."""

    model: str = DEFAULT_MODEL
    """Model spec: smollm2-135m-instruct, tiny-random, a model or training-output directory, or a hub id."""
    data: Path | None = None
    """JSONL file or saved HF dataset with demonstrations (give this or --task)."""
    task: str | None = None
    """A task with a training split (bfcl, pubmedqa, sciknoweval_chem, fictional_knowledge, gsm8k, ...)."""
    limit: int = 16
    """Probe a fixed seeded subset of this many examples with demonstrations."""
    templates: list[str] = field(default_factory=lambda: list(TEACHER_TEMPLATES))
    """Teacher templates to compare: registered names or format strings with {prompt} and {demonstration}."""
    output: Path | None = None
    """Write the JSON report here (the table and verdict are always printed)."""
    scorer: str = "contains"
    """Scorer for --data rows that all have `answer` (exact, contains, number, choice, json, regex)."""
    data_dir: Path | None = None
    """Where registered task data lives (default: $SELFDISTILL_DATA or ../shared/data)."""
    max_new_tokens: int | None = None
    """Longest greedy answer (default: the task's own, else 128)."""
    num_samples: int = 2
    """Student samples per example for the KL."""
    sample_tokens: int = 64
    """Longest student sample for the KL."""
    temperature: float = 1.0
    """Sampling temperature of the student samples."""
    skip_first_tokens: int = 3
    """Sample tokens left out of the KL at the start, as in SDFT training."""
    max_teacher_prompt_tokens: int = 2048
    """Teacher prompt budget; the demonstration (never the question) is cut to fit, as in training."""
    batch_size: int = 8
    """Prompts per forward or generation batch."""
    seed: int = 0
    """Seed of the subset and of the student samples."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ... (auto: cuda when available)."""
    progress: bool = True
    """Show progress bars."""
    rollout: RolloutName = "hf"
    """Engine for greedy answers and student samples: hf (model.generate) or vllm."""

    def __post_init__(self) -> None:
        # Here, not at the top: importing the scorers loads the whole task registry (a quarter second), which
        # `--help` does not need.
        from selfdistill.evaluation.tasks.scorers import SCORERS

        if (self.data is None) == (self.task is None):
            raise ValueError("data: give exactly one of --data FILE or --task NAME")
        checks = [
            ("limit", self.limit >= 1, "must be >= 1"),
            ("templates", 0 < len(set(self.templates)) == len(self.templates), "must be distinct, >= 1"),
            ("scorer", self.scorer in SCORERS, f"must be one of {', '.join(SCORERS)}"),
            ("max_new_tokens", self.max_new_tokens is None or self.max_new_tokens > 0, "must be > 0"),
            ("num_samples", self.num_samples >= 1, "must be >= 1"),
            ("sample_tokens", self.sample_tokens > self.skip_first_tokens, "must exceed --skip-first-tokens"),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("skip_first_tokens", self.skip_first_tokens >= 0, "must be >= 0"),
            ("max_teacher_prompt_tokens", self.max_teacher_prompt_tokens > 0, "must be > 0"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"{name.replace('_', '-')}: {why}")
        for t in self.templates:
            try:
                resolve_template(t)
            except ValueError as err:
                raise ValueError(f"templates: {str(err).split(': ', 1)[1]}") from None
        self.data = Path(self.data) if self.data is not None else None
        self.output = Path(self.output) if self.output is not None else None
