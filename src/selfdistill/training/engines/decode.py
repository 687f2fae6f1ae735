"""The ``decode`` engine: the hf engine's sampling, run by a hand-written decode step (``engines/decoder.py``)
instead of ``model.generate``.

    engine = make_engine("decode", model, tok)    # a model it cannot run gets the hf engine, with one log line
    ro = engine.generate(prompt_ids, Sampling(max_new_tokens=64), version=step, seeds=seeds)

It samples what the hf engine samples: the same rows (prompt-major, ``num_generations`` each), the same per-row
seeded Gumbel streams (``rollout.SeededSampler``, one draw of V uniforms per row per step, finished rows included),
the same end-of-turn ids, ``min_new_tokens`` masking and log-probs of the raw logits. Its logits differ from
``generate``'s in the last bits only (fused matmuls sum in another order), so greedy and seeded samples match hf's
token for token except where two scores tie to within rounding.

Weights are gathered from the model's current (LoRA: effective) weights at every ``generate`` and dropped at its
end: in training one rollout follows each weight sync, and holding fused copies across the student's backward
would raise the step's peak memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from selfdistill.training.engines import decoder
from selfdistill.training.engines.base import Rollout, RolloutEngine, Sampling, check_version, row_seeds
from selfdistill.training.engines.hf import HFEngine
from selfdistill.training.rollout import SeededSampler, cut_at_eos, eos_ids, left_pad

log = logging.getLogger(__name__)


def decode_or_hf(
    model: torch.nn.Module,
    tok,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    prepack: str = "auto",
) -> RolloutEngine:
    """The decode engine for ``model``, or the hf engine (one log line says why) where it cannot run it."""
    reason = decoder.unsupported(model)
    if reason is None:
        return DecodeEngine(model, tok, autocast=autocast, prepack=prepack)
    log.info("rollout: the decode engine does not run %s; sampling with hf instead", reason)
    return HFEngine(model, tok, autocast=autocast, prepack=prepack)


class DecodeEngine(HFEngine):
    """The hf engine's contract (the training model itself, its weights synced by reference), sampled by the
    hand-written decode step."""

    name = "decode"

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: Sampling,
        version: int | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Rollout:
        check_version(self, version)
        n = sampling.num_generations
        rows = [p for p in prompts for _ in range(n)]
        prompt_index = [i for i in range(len(prompts)) for _ in range(n)]
        device = next(self.model.parameters()).device
        sampler = None
        if not sampling.greedy:
            if seeds is None:
                seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()
            elif len(seeds) != len(prompts):
                raise ValueError(f"decode: {len(seeds)} seeds for {len(prompts)} prompts")
            sampler = SeededSampler(row_seeds(seeds, n), sampling.temperature, sampling.top_p, device)
        stop = eos_ids(self.tok, self.model)
        ids_BP, mask_BP = left_pad(rows, self.tok.pad_token_id)
        with torch.no_grad(), self._autocast():
            weights = decoder.gather(self.model, rows=len(rows), prepack=self._prepack)
            new_BC, logprobs_BC = decode(
                weights,
                ids_BP.to(device),
                mask_BP.to(device),
                sampling,
                sampler,
                stop,
                self.tok.pad_token_id,
                static=device.type == "cuda",
            )
        completions, sample_logprobs, hit_cap = [], [], []
        rows_logprobs = logprobs_BC.tolist() if logprobs_BC is not None else [[] for _ in range(len(rows))]
        for row, lp in zip(new_BC.tolist(), rows_logprobs, strict=True):
            comp, capped = cut_at_eos(row, set(stop))
            completions.append(comp)
            sample_logprobs.append(lp[: len(comp)])
            hit_cap.append(capped)
        return Rollout(completions, prompt_index, sample_logprobs, hit_cap)


def decode(
    w: decoder.Weights,
    ids_BP: Tensor,
    mask_BP: Tensor,
    sampling: Sampling,
    sampler: SeededSampler | None,
    stop: list[int],
    pad_id: int,
    static: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """New tokens ``[B, C]`` (pad after a row's end of turn) and, if asked, their log-probs under the sampling
    distribution (raw logits at the temperature, as the hf engine reports them); C ≤ max_new_tokens (all rows
    ended sooner). ``static``: decode steps attend over the whole cache with the write column a device tensor
    (fixed shapes and no host reads, as a CUDA graph needs; on for CUDA); otherwise over the columns written so
    far."""
    B, P = ids_BP.shape
    steps = sampling.max_new_tokens
    residual_dtype = w.embed.dtype
    cache = decoder.KVCache.empty(w, B, P + steps, w.dtype)
    rope = decoder.rope_table(w, P + steps, residual_dtype)
    keys_BS = torch.zeros(B, P + steps, dtype=torch.bool, device=w.device)
    keys_BS[:, :P] = mask_BP.bool()
    positions_BP = (mask_BP.cumsum(-1) - 1).clamp(min=0)
    next_position_B1 = mask_BP.sum(-1, keepdim=True)
    stop_K = torch.tensor(stop, device=w.device)
    temperature = sampling.temperature if sampler is not None else 1.0
    unfinished_B = torch.ones(B, dtype=torch.bool, device=w.device)
    tokens, logprobs = [], []
    logits_BV = decoder.forward(w, cache, rope, ids_BP, positions_BP, keys_BS, at=0, kv_len=P)
    for t in range(steps):
        raw_BV = logits_BV.float()
        scores_BV = raw_BV
        if t < sampling.min_new_tokens:
            scores_BV = raw_BV.index_fill(1, stop_K, float("-inf"))
        token_B = (sampler(None, scores_BV) if sampler is not None else scores_BV).argmax(-1)
        if sampling.logprobs:
            logprobs.append(torch.log_softmax(raw_BV / temperature, dim=-1).gather(1, token_B[:, None])[:, 0])
        token_B = torch.where(unfinished_B, token_B, pad_id)
        tokens.append(token_B)
        unfinished_B &= ~torch.isin(token_B, stop_K)
        if t == steps - 1 or not unfinished_B.any():  # the one host sync per step, as in generate
            break
        keys_BS[:, P + t] = True
        at = torch.tensor(P + t, device=w.device) if static else P + t
        kv_len = None if static else P + t + 1
        logits_BV = decoder.forward(w, cache, rope, token_B[:, None], next_position_B1 + t, keys_BS, at, kv_len)
    new_BC = torch.stack(tokens, dim=1).cpu()
    return new_BC, torch.stack(logprobs, dim=1).cpu() if sampling.logprobs else None
