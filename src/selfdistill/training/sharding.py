"""FSDP2 (``--fsdp`` under torchrun): the student, and each copy of it the loop keeps (EMA or frozen teacher, the
anchor's reference), sharded over the processes with raw ``fully_shard``, one unit per decoder layer plus the root.

    shard(model, mesh, bf16=False)                 # in place: parameters become fp32 DTensor shards of dim 0
    with gathered([student, teacher]): generate()  # full weights on every rank; no collective inside the block
    full = full_parameters(model)                  # collective: the full tensors on rank 0, {} on the others
    copy_full_(param, tensor)                      # a full tensor into a (sharded) parameter, no communication

Raw torch rather than accelerate, because accelerate enables FSDP only on accelerators, and one code path is the one
tested here (gloo on CPU). Every function is a plain pass-through on a module that is not sharded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from selfdistill.config import ConfigError


def _fsdp():
    from torch.distributed import fsdp

    return fsdp


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, _fsdp().FSDPModule)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks, found by the class names HF lists as never to be split (``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"fsdp: cannot find the decoder layers of {type(model).__name__} (no _no_split_modules)")
    return layers


def shard(model: torch.nn.Module, mesh: Any, bf16: bool = False) -> torch.nn.Module:
    """Shard ``model`` in place: each decoder layer is one unit (all-gathered for its forward and backward, freed
    after), the root holds the rest (embeddings, final norm, head; tied weights stay tied). The shards stay fp32;
    with ``bf16`` the all-gathered weights are bf16 and gradients are reduced in fp32."""
    fsdp = _fsdp()
    policy = fsdp.MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32 if bf16 else None
    )
    layers = decoder_layers(model)
    for layer in layers:
        fsdp.fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    # The root too (FSDP2 keeps a root's weights gathered after forward, until backward frees them): a teacher runs
    # no backward, so its root would keep the weights of before the EMA update and compute with them next step.
    fsdp.fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    if mesh.device_type == "cpu":
        # pytorch#162338 reports gloo's AVG summing instead of averaging; with SUM, FSDP divides by the world itself.
        # (torch 2.13.0's gloo AVG did average when tried, docs/scale.md; SUM keeps other versions right too, and
        # tests/test_fsdp.py checks the result against one process.)
        for unit in [*layers, model]:
            unit.set_force_sum_reduction_for_comms(True)
    return model


@contextlib.contextmanager
def gathered(models: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Hold the full weights of ``models`` on every rank for the block (rollouts): one all-gather each at entry,
    none inside, so ranks may run different numbers of forwards (``generate`` stops at each rank's own EOS)."""
    units = []
    for model in {id(m): m for m in models}.values():
        units += [m for m in model.modules() if is_sharded(m)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.set_reshard_after_forward(True, recurse=False)  # as shard() set them
            unit.reshard()


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_parameters(module: torch.nn.Module, trainable_only: bool = False) -> dict[str, Tensor]:
    """The module's parameters by name (tied ones once), as full tensors: references when it is not sharded; when it
    is, a collective that every rank must call, the full CPU tensors on rank 0 and {} on the others."""
    params = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad or not trainable_only}
    if not is_sharded(module):
        return params
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(module, options=_full_options())
    return {n: full[n] for n in params if n in full}


@torch.no_grad()
def copy_full_(param: Tensor, full: Tensor) -> None:
    """Copy a full tensor into a parameter; a DTensor shard takes its own slice (every rank holds ``full``)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        mine = distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None)
        param.to_local().copy_(mine.to_local())
    else:
        param.copy_(full)


def local(t: Tensor) -> Tensor:
    """This rank's shard of a DTensor (a view; in-place updates reach the parameter), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer.state_dict()``, or for a sharded model the full state keyed by parameter name (collective; rank
    0 holds it)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """The inverse of ``optimizer_state``; every rank passes the full state read from the checkpoint."""
    keys = list(state.get("state", {}))
    if keys and isinstance(keys[0], str) != is_sharded(model):  # sharded: keyed by parameter name, not index
        raise ValueError("optimizer state was saved with a different --fsdp setting; resume with the same one")
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def unsharded(model: torch.nn.Module, weights: dict[str, Tensor]) -> torch.nn.Module:
    """A plain (not sharded) model of ``model``'s class and config holding ``weights`` (rank 0's full gather), built
    on the meta device so no second set of weights is initialised: what ``save_pretrained`` is called on."""
    import copy

    fsdp_module = _fsdp().FSDPModule
    cls = next(c for c in type(model).__mro__ if not issubclass(c, fsdp_module))  # FSDP2 subclasses the model
    with torch.device("meta"):
        plain = cls(copy.deepcopy(model.config))
    plain.load_state_dict(weights, strict=False, assign=True)
    plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"fsdp: the gathered weights lack {missing[:3]}")
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain


def full_norm(norm: Tensor) -> Tensor:
    """``clip_grad_norm_``'s total norm as a plain tensor (over DTensor gradients it is a DTensor)."""
    from torch.distributed.tensor import DTensor

    return norm.full_tensor() if isinstance(norm, DTensor) else norm
