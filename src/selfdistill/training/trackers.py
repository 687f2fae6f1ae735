"""Experiment trackers beside metrics.jsonl: TensorBoard, trackio (local), Weights & Biases.

    trackers = Trackers.open(["tensorboard"], output=Path("runs/x"), run_name="x", config=config_dict(cfg))
    trackers.log({"loss": 0.3, ...}, step=1)     # every metrics.jsonl key, under the same name
    trackers.log_table("matrix", ["after", "task_a"], [["base", 0.1]], step=2)
    trackers.log_image("plots/pareto", Path("runs/x/pareto.png"), step=2)
    trackers.log_text("report", markdown, step=2)
    trackers.close()

``metrics.jsonl`` stays the source of truth: a tracker that raises (no network, a full disk, a quota) is warned
about once and dropped, and training goes on. Each backend is an optional extra, imported only when asked for;
``require`` turns a missing one into a one-line error before anything runs.
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from selfdistill.config import ConfigError, TrackerName
from selfdistill.markdown import table

log = logging.getLogger(__name__)

__all__ = ["TRACKERS", "TrackerName", "Trackers", "markdown_table", "require"]
INSTALL = {"tensorboard": "pip install tensorboard", "trackio": "pip install trackio", "wandb": "pip install wandb"}


class Tracker(Protocol):
    """A backend. ``log`` and ``close`` are required; a backend without ``log_text``, ``log_table`` or
    ``log_image`` is skipped for those."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_text(self, key: str, markdown: str, step: int) -> None: ...

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None: ...

    def log_image(self, key: str, png: Path, step: int) -> None: ...

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
        k: float(v)
        for k, v in metrics.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table (TensorBoard's text tab renders it); floats to three decimals."""

    def cell(value: Any) -> str:
        return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    return "\n".join(table(columns, [[cell(v) for v in row] for row in rows]))


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

    def log_text(self, key: str, markdown: str, step: int) -> None:
        self.writer.add_text(key, markdown, step)
        self.writer.flush()

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.log_text(key, markdown_table(columns, rows), step)

    def log_image(self, key: str, png: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(png) as image:
            self.writer.add_image(key, np.asarray(image.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trackio:
    """trackio's local store ($TRACKIO_DIR, else ~/.cache/huggingface/trackio); project ``selfdistill``."""

    def __init__(self, output: Path, run_name: str, config: dict) -> None:
        import trackio

        self.trackio = trackio
        self.run = trackio.init(
            project=os.environ.get("TRACKIO_PROJECT", "selfdistill"), name=run_name, config=_flat(config), embed=False
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(_scalars(metrics), step=step)

    def log_text(self, key: str, markdown: str, step: int) -> None:
        self.run.log({key: self.trackio.Markdown(markdown)}, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.run.log({key: self.trackio.Table(columns=columns, data=rows)}, step=step)

    def log_image(self, key: str, png: Path, step: int) -> None:
        self.run.log({key: self.trackio.Image(png)}, step=step)

    def close(self) -> None:
        self.run.finish()


class WandB:
    """Weights & Biases; ``WANDB_MODE=offline`` keeps the run on disk under OUTPUT/wandb."""

    def __init__(self, output: Path, run_name: str, config: dict) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "selfdistill"),
            name=run_name,
            config=_flat(config),
            dir=str(output),
            reinit="finish_previous",
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(_scalars(metrics), step=step)

    def log_text(self, key: str, markdown: str, step: int) -> None:
        self.run.log({key: self.wandb.Html(f"<pre>{html.escape(markdown)}</pre>")}, step=step)  # no markdown type

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.run.log({key: self.wandb.Table(columns=columns, data=rows)}, step=step)

    def log_image(self, key: str, png: Path, step: int) -> None:
        self.run.log({key: self.wandb.Image(str(png))}, step=step)

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

    def log_text(self, key: str, markdown: str, step: int) -> None:
        self._each("log_text", key, markdown, step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self._each("log_table", key, columns, rows, step)

    def log_image(self, key: str, png: Path, step: int) -> None:
        self._each("log_image", key, png, step)

    def close(self) -> None:
        self._each("close")
        self.live = {}

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _each(self, method: str, *args: Any) -> None:
        for name in list(self.live):
            call = getattr(self.live[name], method, None)
            if call is None:  # a backend that has no such media type skips it
                continue
            try:
                call(*args)
            except Exception as err:  # noqa: BLE001
                log.warning(
                    "report-to %s: %s failed (%s); dropping it, metrics.jsonl still has everything", name, method, err
                )
                self.live.pop(name, None)
