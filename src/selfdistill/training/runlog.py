"""What a training run writes as it goes: seconds per phase of a step, and each step's record to metrics.jsonl (the
source of truth), the trackers, one log line and the progress bar.

    timer = PhaseTimer(device)
    with timer("rollout"): ...                     # record |= timer.pop() once per step
    with StepLog.open(output, write=is_main, ...) as step_log:
        step_log.write(record)
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from selfdistill.fileio import write_text_atomic
from selfdistill.training.trackers import Trackers

log = logging.getLogger(__name__)


class PhaseTimer:
    """Seconds per phase of a step (``with timer("rollout"): ...``); ``pop()`` returns ``{"seconds_rollout": s}``
    for the phases that ran and starts over. A phase entered inside another pauses it (the TIS weighting inside the
    student's loss counts as ``tis`` only). On CUDA it synchronizes at the edges, so a phase owns its kernels."""

    def __init__(self, device: torch.device) -> None:
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self._seconds: dict[str, float] = {}
        self._open: list[str] = []
        self._since = 0.0

    def _charge(self) -> None:
        """Add the time since the last edge to the innermost open phase."""
        now = time.perf_counter()
        if self._open:
            phase = self._open[-1]
            self._seconds[phase] = self._seconds.get(phase, 0.0) + now - self._since
        self._since = now

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._sync()
        self._charge()
        self._open.append(phase)
        try:
            yield
        finally:
            self._sync()
            self._charge()
            self._open.pop()

    def pop(self) -> dict[str, float]:
        out = {f"seconds_{phase}": s for phase, s in self._seconds.items()}
        self._seconds = {}
        return out


@dataclass
class StepLog:
    """Where each step's record goes. Only rank 0 writes; the others hold a log that discards."""

    bar: Any
    """The progress bar."""
    metrics_file: Any
    """metrics.jsonl, opened for appending (or a discarding stand-in)."""
    tracked: Trackers
    """TensorBoard, trackio, W&B: whichever --report-to named."""
    total_steps: int
    """Steps the run will take."""

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        output: Path,
        *,
        write: bool,
        total_steps: int,
        step: int,
        desc: str,
        progress: bool,
        report_to: list[str],
        config: dict,
    ) -> Iterator[StepLog]:
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(
                tqdm(total=total_steps, initial=step, desc=desc, unit="step", disable=not (progress and write))
            )
            metrics_file = stack.enter_context((output / "metrics.jsonl").open("a") if write else _Discard())
            stack.enter_context(logging_redirect_tqdm())  # step lines print above the progress bar, not through it
            tracked = stack.enter_context(Trackers.open(report_to if write else [], output, output.name, config))
            yield cls(bar, metrics_file, tracked, total_steps)

    def write(self, record: dict) -> None:
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        self.tracked.log(record, record["step"])
        log.info(format_record(record, self.total_steps))
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", s_per_step=f"{record['seconds_per_step']:.1f}")


class _Discard(contextlib.nullcontext):
    """The metrics file of a rank other than 0: writes go nowhere."""

    def __enter__(self):
        return self

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def format_record(record: dict, total: int) -> str:
    parts = [f"step {record['step']}/{total}", f"loss {record['loss']:.4f}"]
    if "kl" in record:
        parts.append(f"kl {record['kl']:.4f}")
    parts += [f"len {record['completion_length']:.0f}", f"lr {record['lr']:.1e}"]
    parts.append(f"{record['seconds_per_step']:.1f} s/step")
    return " | ".join(parts)


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so no step appears twice.

    A line torn by a kill mid-write is dropped too; the file is replaced atomically, so a kill here loses nothing.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    write_text_atomic(path, "".join(kept))
