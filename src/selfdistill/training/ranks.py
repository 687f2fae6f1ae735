"""Data-parallel ranks for the training loop: one process (the default), or N under ``torchrun`` through
accelerate (gloo on CPU, NCCL on GPUs), each holding the whole model (DDP) or a shard of it (``--fsdp``: FSDP2).

    ranks = Ranks.setup(device)          # reads torchrun's environment; world 1 without it
    trained = ranks.wrap(model)          # DDP, or the model sharded in place (sharding.py)
    mine = ranks.share(global_idx)       # this rank's rows of the global micro-batch
    stats = ranks.mean(stats)            # every rank logs the same numbers; only rank 0 writes them

With one process nothing here touches torch.distributed, so a single-process run is exactly what it was.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from selfdistill.config import ConfigError
from selfdistill.training import sharding


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    accelerator: Any = None
    device: torch.device = torch.device("cpu")
    mesh: Any = None
    """The FSDP2 device mesh (None: not sharded)."""
    bf16: bool = False
    """Sharded weights are all-gathered in bf16 for compute (the shards stay fp32)."""

    @classmethod
    def setup(cls, device: torch.device, fsdp: bool = False, bf16: bool = False) -> Ranks:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if fsdp and world <= 1:
            raise ConfigError(
                "fsdp: shards over several processes; launch with torchrun --nproc-per-node N "
                "(N > 1), or leave --fsdp off"
            )
        if world <= 1:
            return cls(device=device)
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=device.type == "cpu")  # mixed precision stays ours (autocast in train.py)
        ranks = cls(accelerator.process_index, accelerator.num_processes, accelerator, accelerator.device, bf16=bf16)
        if fsdp:
            from torch.distributed.device_mesh import init_device_mesh

            ranks.mesh = init_device_mesh(ranks.device.type, (ranks.world,))
        return ranks

    @property
    def fsdp(self) -> bool:
        return self.mesh is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int, num_examples: int) -> None:
        """Every micro-batch must give every rank at least one row (the last of an epoch can be short)."""
        if self.world == 1:
            return
        last = num_examples % batch_size or batch_size
        smallest = min(batch_size, num_examples, last)
        if smallest < self.world:
            raise ConfigError(
                f"batch-size: a micro-batch of {smallest} examples cannot give each of {self.world} processes a "
                f"row ({num_examples} examples in batches of {batch_size}); use a batch size and data size whose "
                f"batches all have at least {self.world} rows"
            )

    def share(self, idx: list[int]) -> list[int]:
        """This rank's contiguous slice of a global micro-batch, split as evenly as possible."""
        if self.world == 1:
            return idx
        per, extra = divmod(len(idx), self.world)
        start = self.rank * per + min(self.rank, extra)
        return idx[start : start + per + (self.rank < extra)]

    def loss_scale(self, local_rows: int, global_rows: int) -> float:
        """Factor that makes DDP's gradient average over ranks equal the mean over the global batch's rows."""
        return 1.0 if self.world == 1 else local_rows * self.world / global_rows

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model the loss's forward runs through: DDP (which averages gradients in backward), or with --fsdp
        the model itself, sharded in place (its parameters are new objects: build the optimizer after this)."""
        if self.fsdp:
            return self.shard(model)
        return model if self.accelerator is None else self.accelerator.prepare(model)

    def shard(self, module: torch.nn.Module) -> torch.nn.Module:
        """With --fsdp, shard a model (or a teacher's copy) in place as the student is; otherwise leave it."""
        return sharding.shard(module, self.mesh, self.bf16) if self.fsdp else module

    def gathered(self, models: list[torch.nn.Module]) -> contextlib.AbstractContextManager:
        """With --fsdp, the full weights of ``models`` on every rank for the block (rollouts)."""
        return sharding.gathered(models) if self.fsdp else contextlib.nullcontext()

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm (over all shards under --fsdp) and return it as a plain tensor."""
        return sharding.full_norm(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (every rank must pass the same keys)."""
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist(), strict=True))

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a signal that reached one process stops all of them)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (a picklable object: RNG states)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()
