"""Truncated importance sampling (TIS) for rollouts drawn by an engine whose sampler is not the trainer's.

    w_BC = tis_weights(trainer_logp_BC, sampler_logp_BC, mask_BC, mode="prefix", cap=2.0)
    loss = masked_mean(loss_BC * w_BC, loss_mask_BC)

The rollout y was sampled from π_s (e.g. vLLM, its own kernels and precision); the loss assumes y ~ π_θ (the
trainer). Per token the log-ratio is Δ_t = log π_θ(y_t) − log π_s(y_t), with both at the sampling temperature.

- ``prefix``: the SDFT loss at position t is a divergence over the whole vocabulary at prefix y<t, so only the
  tokens *before* t were sampled for it: w_t = min(cap, exp(Σ_{s<t} Δ_s)), and w_0 = 1. This is the weight that
  makes the per-position loss unbiased (before the cap), and the default.
- ``sequence``: every token of a row gets the mean over the row of min(cap, exp(Δ_t)), as the SDFT authors' code
  weighs each sequence's loss. Lower variance, not aligned with the per-position loss.
- ``none``: all ones.

Δ is clamped to ±20 and taken as 0 where the mask is off or either log-prob is not finite, so a padded or broken
position can never produce NaN or inf weights. Weights carry no gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

TISMode = Literal["none", "sequence", "prefix"]
MAX_LOG_RATIO = 20.0


@torch.no_grad()
def log_ratios(trainer_logp_BC: Tensor, sampler_logp_BC: Tensor, mask_BC: Tensor) -> Tensor:
    """Δ_BC = trainer − sampler log-probs, 0 off the mask or where either is not finite, clamped to ±20."""
    delta = trainer_logp_BC.float() - sampler_logp_BC.float()
    ok = mask_BC.bool() & torch.isfinite(delta)
    return torch.where(ok, delta, torch.zeros_like(delta)).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


@torch.no_grad()
def tis_weights(
    trainer_logp_BC: Tensor, sampler_logp_BC: Tensor, mask_BC: Tensor, mode: TISMode = "prefix", cap: float = 2.0
) -> Tensor:
    """Per-token loss weights ``[B, C]`` (zero off the mask)."""
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    mask = mask_BC.float()
    if mode == "none":
        return mask
    delta_BC = log_ratios(trainer_logp_BC, sampler_logp_BC, mask_BC)
    if mode == "prefix":
        before_BC = torch.cumsum(delta_BC, dim=1) - delta_BC  # Σ_{s<t} Δ_s (exclusive)
        return torch.exp(before_BC.clamp(max=MAX_LOG_RATIO)).clamp(max=cap) * mask
    if mode == "sequence":
        ratio_BC = torch.exp(delta_BC).clamp(max=cap) * mask
        per_row_B = ratio_BC.sum(1) / mask.sum(1).clamp(min=1)
        return per_row_B[:, None] * mask
    raise ValueError(f"mode must be none, sequence or prefix, got {mode!r}")


@torch.no_grad()
def tis_stats(trainer_logp_BC: Tensor, sampler_logp_BC: Tensor, mask_BC: Tensor, weights_BC: Tensor) -> dict:
    """What a run logs: per-token ratio mean/min/max, mean |Δ| and the mean weight, over the masked tokens."""
    on = mask_BC.bool()
    if not on.any():
        return {}
    delta = log_ratios(trainer_logp_BC, sampler_logp_BC, mask_BC)[on]
    ratio = torch.exp(delta)
    return {
        "tis_ratio_mean": ratio.mean().item(),
        "tis_ratio_min": ratio.min().item(),
        "tis_ratio_max": ratio.max().item(),
        "tis_logprob_gap": delta.abs().mean().item(),
        "tis_weight_mean": weights_BC[on].float().mean().item(),
    }


def token_logprobs(logits_BCV: Tensor, ids_BC: Tensor, temperature: float = 1.0, chunk_size: int = 64) -> Tensor:
    """log softmax(logits / T)[y] per token in fp32, without grad, a chunk of positions at a time (no [B, C, V]
    fp32 copy)."""
    out = []
    with torch.no_grad():
        for start in range(0, logits_BCV.shape[1], chunk_size):
            z = logits_BCV[:, start : start + chunk_size].float() / temperature
            picked = z.gather(-1, ids_BC[:, start : start + chunk_size, None]).squeeze(-1)
            out.append(picked - torch.logsumexp(z, dim=-1))
    return torch.cat(out, dim=1) if out else logits_BCV.new_zeros(ids_BC.shape, dtype=torch.float32)
