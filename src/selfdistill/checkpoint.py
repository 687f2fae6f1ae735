"""Atomic training checkpoints: everything a killed run needs to continue bit-identically.

    save_checkpoint(run_dir, step, model=..., optimizer=..., scheduler=..., teacher=..., state={...}, keep=2)
    ckpt = latest_checkpoint(run_dir)       # Path or None
    state = load_checkpoint(ckpt, model=..., optimizer=..., scheduler=..., teacher=...)

Layout of ``run_dir/checkpoints/step-000050/``: ``trainable.safetensors`` (the parameters being trained: all of
them, or only the LoRA adapter), ``teacher.safetensors`` (EMA/frozen shadow), ``optimizer.pt`` and
``scheduler.pt`` (tensors and numbers only, read back with ``weights_only=True``), ``rng.pt``, and ``state.json``
(step, data position, config). A checkpoint is written into a hidden temporary directory, flushed, and renamed
into place, so a crash at any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_files(tmp: Path, tensors: dict[str, dict[str, torch.Tensor]], objects: dict[str, Any], state: dict):
    for name, tdict in tensors.items():
        save_file({k: v.detach().contiguous().cpu() for k, v in tdict.items()}, tmp / f"{name}.safetensors")
    for name, obj in objects.items():
        torch.save(obj, tmp / f"{name}.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        with f.open("rb+") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    teacher: Any,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep``."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        tensors = {"trainable": trainable_state(model)}
        if teacher_state := teacher.state_dict():
            tensors["teacher"] = teacher_state
        objects = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
        _write_files(tmp, tensors, objects, {**state, "step": step})
        if final.exists():  # a rerun reaching the same step: replace, the new one is complete
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories from interrupted writes are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(
    ckpt: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    teacher: Any,
) -> dict[str, Any]:
    """Restore everything saved by ``save_checkpoint`` in place and return its ``state.json``."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
        params = load_file(ckpt / "trainable.safetensors")
        own = trainable_state(model)
        if set(params) != set(own):
            raise CheckpointError(f"{ckpt}: trained parameters do not match this model (LoRA vs full?)")
        with torch.no_grad():
            for name, value in params.items():
                own[name].copy_(value)
        if (ckpt / "teacher.safetensors").is_file():
            teacher.load_state_dict(load_file(ckpt / "teacher.safetensors"))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True))
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{ckpt}: cannot load checkpoint ({err})") from err
    return state
