"""Atomic training checkpoints: everything a killed run needs to continue bit-identically.

    save_checkpoint(run_dir, step, model=..., optimizer=..., scheduler=..., teacher=..., state={...}, keep=2)
    ckpt = latest_checkpoint(run_dir)       # Path or None
    state = load_checkpoint(ckpt, model=..., optimizer=..., scheduler=..., teacher=...)

Layout of ``run_dir/checkpoints/step-000050/``: ``trainable.safetensors`` (the parameters being trained: all of
them, or only the LoRA adapter), ``teacher.safetensors`` (EMA/frozen shadow), ``optimizer.pt`` and
``scheduler.pt`` (tensors and numbers only, read back with ``weights_only=True``), ``rng.pt``, and ``state.json``
(step, data position, config). A checkpoint is written into a hidden temporary directory, flushed, and renamed
into place, so a crash at any moment leaves either the previous checkpoint or the new one, never half of one.
Directories being replaced or pruned are first renamed out of the ``step-`` namespace, then deleted; leftovers
of a killed writer (``.tmp-*``, ``.old-*``) are never read and are removed by the next save.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from selfdistill.errors import UserError
from selfdistill.training.sharding import copy_full_, full_parameters, load_optimizer_state, optimizer_state

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"
_TMP, _OLD = ".tmp-", ".old-"
_OBJECTS = ("optimizer", "scheduler", "rng")


class CheckpointError(UserError):
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
    state = {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _names_shapes(model: torch.nn.Module) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Each trained parameter's dtype and full shape (a DTensor shard reports the full shape)."""
    return {n: (p.dtype, tuple(p.shape)) for n, p in trainable_state(model).items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    teacher: Any,
    state: dict[str, Any],
    rng: list[dict[str, Any]] | None = None,
    keep: int = 2,
    write: bool = True,
) -> Path | None:
    """Write checkpoint ``step`` atomically, then delete all but the newest ``keep``.

    With a sharded (FSDP2) model every rank calls this, to gather the full state; only the one with ``write``
    writes it. ``rng`` holds every rank's RNG state in rank order (``Ranks.gather(rng_state())``: each rank samples
    its own rows, so each resumes with its own state); None means this process's alone. Raises CheckpointError
    (one line) when the disk refuses the write (full, read-only); the previous checkpoints are left as they were.
    """
    tensors = {"trainable": full_parameters(model, trainable_only=True)}
    if teacher.has_state:
        tensors["teacher"] = teacher.state_dict()
    objects = {
        "optimizer": optimizer_state(model, optimizer),
        "scheduler": scheduler.state_dict(),
        "rng": {"ranks": rng if rng is not None else [rng_state()]},
    }
    if not write:
        return None
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"{_PREFIX}{step:06d}"
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}{final.name}-", dir=root))
        _write_files(tmp, tensors, objects, {**state, "step": step})
        # A rerun reaching the same step (resumed after the final checkpoint): rename the old one aside, then
        # the new one in; only between these two renames is there no step-N, and earlier checkpoints cover it.
        replaced = _retire(final) if final.exists() else None
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            reason = err.strerror or str(err)
            raise CheckpointError(
                f"{final}: cannot write checkpoint ({reason}); earlier checkpoints in {root} are kept"
            ) from err
        raise
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(_retire(old), ignore_errors=True)
    return final


def _retire(path: Path) -> Path:
    """Rename a checkpoint out of the ``step-`` namespace (atomic), so a half-deleted one is never listed."""
    target = path.with_name(f"{_OLD}{path.name}-{os.getpid()}")
    shutil.rmtree(target, ignore_errors=True)
    os.rename(path, target)
    return target


def _remove_leftovers(root: Path) -> None:
    """Temporary and retired directories a killed writer left behind."""
    for p in root.iterdir():
        if p.name.startswith((_TMP, _OLD)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


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
    rank: int = 0,
    world: int = 1,
) -> dict[str, Any]:
    """Restore everything saved by ``save_checkpoint`` in place and return its ``state.json``.

    Rank ``rank`` of ``world`` takes its own RNG state. A checkpoint saved at another number of ranks has none
    that continue this run's sampling: the RNG is then left as seeded and a warning says so.

    Every file is read in full and the parameters checked before anything is restored. A sharded model: every
    rank reads the full files and keeps its own slices. Raises CheckpointError (one line) for anything unreadable
    or mismatched.
    """
    try:
        state, params, teacher_params, objects = read_checkpoint(ckpt)
        own = _names_shapes(model)
        if set(params) != set(own):
            raise CheckpointError(f"{ckpt}: trained parameters do not match this model (LoRA vs full?)")
        for name, value in params.items():
            if (value.dtype, tuple(value.shape)) != own[name]:
                raise CheckpointError(
                    f"{ckpt}: parameter {name!r} is {value.dtype} {tuple(value.shape)}, "
                    f"the model has {own[name][0]} {own[name][1]}"
                )
        if bool(teacher_params) != teacher.has_state:
            raise CheckpointError(f"{ckpt}: teacher state does not match this run (--teacher or --method changed?)")
        for name, param in trainable_state(model).items():
            copy_full_(param, params[name])
        teacher.load_state_dict(teacher_params)
        load_optimizer_state(model, optimizer, objects["optimizer"])
        scheduler.load_state_dict(objects["scheduler"])
        saved = _rank_rng_states(objects["rng"])
        if len(saved) == world:
            set_rng_state(saved[rank])
        else:
            log.warning(
                "%s was saved by %d process(es), this run has %d: sampling continues from a fresh seed, so the "
                "rest of the run will not repeat the original's rollouts",
                ckpt,
                len(saved),
                world,
            )
    except CheckpointError:
        raise
    except Exception as err:  # a damaged file surfaces as many types (SafetensorError, UnpicklingError, ...)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{ckpt}: cannot load checkpoint ({reason})") from err
    return state


def _rank_rng_states(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-rank RNG states; a checkpoint from before they were per rank holds one process's state."""
    return list(saved["ranks"]) if "ranks" in saved else [saved]


def read_checkpoint(
    ckpt: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, trainable, teacher, objects)`` read from disk without unpickling anything but tensors and numbers.

    ``teacher`` is empty for a live teacher; ``objects`` holds the optimizer, scheduler and RNG states.
    """
    ckpt = Path(ckpt)
    state = json.loads((ckpt / "state.json").read_text())
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise CheckpointError(f"{ckpt}: state.json has no valid 'step'")
    params = load_file(ckpt / "trainable.safetensors")
    teacher_file = ckpt / "teacher.safetensors"
    teacher_params = load_file(teacher_file) if teacher_file.is_file() else {}
    objects = {name: torch.load(ckpt / f"{name}.pt", weights_only=True) for name in _OBJECTS}
    return state, params, teacher_params, objects
