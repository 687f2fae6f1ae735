"""Experiment trackers beside metrics.jsonl: TensorBoard, trackio (local), Weights & Biases.

    trackers = Trackers.open(["tensorboard"], output=Path("runs/x"), run_name="x", config=config_dict(cfg))
    trackers.log({"loss": 0.3, ...}, step=1)     # every metrics.jsonl key, under the same name
    trackers.close()

``metrics.jsonl`` stays the source of truth: a tracker that raises (no network, a full disk, a quota) is warned
about once and dropped, and training goes on. Each backend is an optional extra, imported only when asked for;
``require`` turns a missing one into a one-line error before anything runs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from selfdistill.config import ConfigError, TrackerName

log = logging.getLogger(__name__)

__all__ = ["TRACKERS", "TrackerName", "Trackers", "require"]
INSTALL = {"tensorboard": "pip install tensorboard", "trackio": "pip install trackio", "wandb": "pip install wandb"}


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def require(names: list[str]) -> None:
    for name in names:
        if name not in INSTALL:
            raise ConfigError(f"report-to: unknown tracker {name!r}; choose from {', '.join(INSTALL)}")
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"report-to: {name} is not installed; {INSTALL[name]}")


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric values; ``step`` is the x axis the trackers take separately, not a series of its own."""
    return {
        k: float(v) for k, v in metrics.items() if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as trackers take them: scalars and strings, lists as JSON text."""
    return {k: v if isinstance(v, int | float | str | bool) else json.dumps(v) for k, v in config.items()}


class TensorBoard:
    """Event files under OUTPUT/tensorboard (``tensorboard --logdir OUTPUT``)."""

    def __init__(self, output: Path, run_name: str, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(output / "tensorboard"))
        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in _scalars(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trackio:
    """trackio's local store ($TRACKIO_DIR, else ~/.cache/huggingface/trackio); project ``selfdistill``."""

    def __init__(self, output: Path, run_name: str, config: dict) -> None:
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", "selfdistill"), name=run_name,
                                config=_flat(config), embed=False)  # fmt: skip

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(_scalars(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class WandB:
    """Weights & Biases; ``WANDB_MODE=offline`` keeps the run on disk under OUTPUT/wandb."""

    def __init__(self, output: Path, run_name: str, config: dict) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "selfdistill"), name=run_name,
                              config=_flat(config), dir=str(output), reinit="finish_previous")  # fmt: skip

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(_scalars(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS: dict[str, type] = {"tensorboard": TensorBoard, "trackio": Trackio, "wandb": WandB}


class Trackers:
    """Every tracker asked for; each one that fails is warned about once and dropped."""

    def __init__(self, live: dict[str, Any]) -> None:
        self.live = live

    @classmethod
    def open(cls, names: list[str], output: Path, run_name: str, config: dict) -> Trackers:
        live: dict[str, Any] = {}
        for name in dict.fromkeys(names):
            try:
                live[name] = TRACKERS[name](output, run_name, config)
            except Exception as err:  # noqa: BLE001 - any tracker failure must not stop training
                log.warning("report-to %s: could not start (%s); metrics.jsonl still has everything", name, err)
        return cls(live)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._each("log", metrics, step)

    def close(self) -> None:
        self._each("close")
        self.live = {}

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _each(self, method: str, *args: Any) -> None:
        for name in list(self.live):
            try:
                getattr(self.live[name], method)(*args)
            except Exception as err:  # noqa: BLE001
                log.warning("report-to %s: %s failed (%s); dropping it, metrics.jsonl still has everything",
                            name, method, err)  # fmt: skip
                self.live.pop(name, None)
