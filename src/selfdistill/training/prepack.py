"""Prepacked CPU matmul weights for decoding.

A decode step at a rollout's batch size (8 rows) does little arithmetic per weight it reads, so on a CPU its matmuls
are bound by memory traffic, and the stock kernels add to it: each call repacks the weight into the kernel's blocked
layout before multiplying. Inside ``prepacked_linears(model)`` every plain ``nn.Linear`` on the CPU packs its weight
once, on entry, and every call of at most ``MAX_ROWS`` rows (every decode step of a ``generate``) multiplies by
the packed copy:

- fp32: MKL's packed sgemm (``torch.ops.mkl._mkl_linear``, the kernel inductor uses for frozen fp32 linears). It
  sums in another order than the stock kernel, so results can differ from it in the last bits;
- bf16 (under bf16 autocast, or bf16 weights): oneDNN's prepacked matmul (``torch.ops.mkldnn._linear_pointwise``),
  the stock kernel's own library, which gives the same results as the stock bf16 linear.

``mode`` says where to pack: ``auto`` in bf16 only (results unchanged, and no memory beyond the autocast copy's
size), ``on`` in fp32 as well (faster fp32 rollouts, other last bits, a packed copy of the weights while sampling),
``off`` nowhere. The packed copies are made on entry and live until the block exits; a weight changed in
the block (its version counter moves) is packed again. Calls with grad enabled, and anything that is not a plain
CPU ``nn.Linear`` with a plain tensor weight (peft's LoRA layers pack their base layer only; sharded DTensor weights
not at all), run as usual. Where this torch lacks the kernels, the block changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_ROWS = 64
"""Calls with more rows than this (a prompt's prefill) do enough arithmetic per weight read to gain nothing; they
run the stock kernel."""


@functools.cache
def kernels_available(dtype: torch.dtype) -> bool:
    """Whether this torch build has the packed CPU kernel for ``dtype`` (fp32: MKL; bf16: oneDNN with bf16)."""
    if dtype == torch.float32:
        return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")
    if dtype == torch.bfloat16:
        return (
            torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    return False


def _packable(module: nn.Module) -> bool:
    if type(module) is not nn.Linear:
        return False
    weight = module.weight
    return (
        type(weight.data) is Tensor and weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
    )


class _Packed:
    """One linear's packed weights, by compute dtype, each with the weight version it was packed from."""

    def __init__(self, module: nn.Linear, dtypes: tuple[torch.dtype, ...]) -> None:
        self.module = module
        self.dtypes = dtypes  # the compute dtypes to pack for; others run the stock kernel
        self.by_dtype: dict[torch.dtype, tuple[int, Tensor, Tensor | None]] = {}

    def weight(self, dtype: torch.dtype, rows: int) -> tuple[Tensor, Tensor | None]:
        weight, bias = self.module.weight, self.module.bias
        cached = self.by_dtype.get(dtype)
        if cached is None or cached[0] != weight._version:
            w = weight.detach().to(dtype)  # the row count only picks the layout; any row count can use it
            packed = (
                torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
                if dtype == torch.float32
                else torch.ops.mkldnn._reorder_linear_weight(w, rows)
            )
            cached = (weight._version, packed, None if bias is None else bias.detach().to(dtype))
            self.by_dtype[dtype] = cached
        return cached[1], cached[2]

    def forward(self, x: Tensor) -> Tensor:
        module = self.module
        if torch.is_grad_enabled():
            return F.linear(x, module.weight, module.bias)
        dtype = _compute_dtype(module.weight)
        rows = x.numel() // max(1, x.shape[-1])
        if dtype not in self.dtypes or not 0 < rows <= MAX_ROWS or x.dtype not in (torch.float32, torch.bfloat16):
            return F.linear(x, module.weight, module.bias)
        packed, bias = self.weight(dtype, rows)
        return _packed_linear(x.to(dtype).contiguous(), packed, module.weight, bias, rows)


def _packed_linear(x: Tensor, packed: Tensor, weight: Tensor, bias: Tensor | None, rows: int) -> Tensor:
    """``x @ W.T + b`` with ``W`` prepacked for ``x``'s dtype (fp32: MKL, bf16: oneDNN)."""
    if x.dtype == torch.float32:
        return torch.ops.mkl._mkl_linear(x, packed, weight.detach(), bias, rows)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _compute_dtype(weight: Tensor) -> torch.dtype | None:
    """The dtype a stock linear would compute in here: bf16 under bf16 autocast, the weight's own without autocast,
    None (not packed) under any other autocast."""
    if not torch.is_autocast_enabled("cpu"):
        return weight.dtype
    return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None


MODES = ("auto", "on", "off")


@contextlib.contextmanager
def prepacked_linears(model: nn.Module, rows: int = 8, mode: str = "auto") -> Iterator[None]:
    """Within the block, ``model``'s plain CPU linears multiply by packed weights when grad is off (module doc).

    The weights are packed on entry for the compute dtype in force there (bf16 under autocast) and a decode step of
    ``rows`` rows (the layout is tuned for it; any row count can use it). With more than ``MAX_ROWS`` rows, or
    ``mode="off"``, nothing changes."""
    if mode not in MODES:
        raise ValueError(f"prepack: mode must be one of {', '.join(MODES)}, got {mode!r}")
    dtypes = {"auto": (torch.bfloat16,), "on": (torch.float32, torch.bfloat16), "off": ()}[mode]
    dtypes = tuple(d for d in dtypes if kernels_available(d))
    modules = [m for m in model.modules() if _packable(m)] if dtypes and rows <= MAX_ROWS else []
    saved = []
    for module in modules:
        saved.append((module, module.__dict__.get("forward")))
        packed = _Packed(module, dtypes)
        if (dtype := _compute_dtype(module.weight)) in dtypes:
            packed.weight(dtype, rows)
        module.forward = packed.forward
    try:
        yield
    finally:
        for module, forward in saved:
            if forward is None:
                del module.forward
            else:
                module.forward = forward
