"""On-policy sampling and sequence packing.

    ro = sample(model, tok, prompt_ids, temperature=1.0, max_new_tokens=128)
    batch = pack(prompt_ids, completion_ids, pad_id)   # [left-padded prompt | right-padded completion]

Shapes: B rows, P prompt columns (left padded), C completion columns (right padded), L = P + C.
Packing every prompt to the same width P puts completion token t at column P + t in every row, so teacher and
student logits for the same completion line up even though their prompts differ in length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import LogitsProcessor, PreTrainedTokenizerBase, TopPLogitsWarper
from transformers.modeling_outputs import CausalLMOutputWithPast

from selfdistill.training.engines.base import Rollout, row_seeds
from selfdistill.training.prepack import prepacked_linears

CACHE_KEY = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
"""The KV-cache argument and output field of a causal LM forward (transformers 5.24 renamed past_key_values)."""


@dataclass
class Packed:
    input_ids_BL: Tensor
    attention_mask_BL: Tensor
    position_ids_BL: Tensor
    completion_ids_BC: Tensor
    completion_mask_BC: Tensor
    prompt_width: int

    @property
    def num_completion(self) -> int:
        return self.completion_ids_BC.shape[1]

    def to(self, device: torch.device | str) -> Packed:
        return Packed(
            *(t.to(device) for t in (self.input_ids_BL, self.attention_mask_BL, self.position_ids_BL)),
            self.completion_ids_BC.to(device),
            self.completion_mask_BC.to(device),
            self.prompt_width,
        )


def eos_ids(tok: PreTrainedTokenizerBase, model: torch.nn.Module | None = None) -> list[int]:
    """Every token id that ends a turn: the tokenizer's EOS plus the model's generation_config EOS ids."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(ids)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
    return ids, mask


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int) -> Packed:
    """``[left-padded prompt | completion | right padding]`` rows with mask-aware position ids."""
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    width = max(1, max(len(c) for c in completions))
    comp_ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((len(completions), width), dtype=torch.long)
    for i, c in enumerate(completions):
        comp_ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        comp_mask[i, : len(c)] = 1
    mask = torch.cat([prompt_mask, comp_mask], dim=1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return Packed(
        torch.cat([prompt_ids, comp_ids], dim=1), mask, position_ids, comp_ids, comp_mask, prompt_ids.shape[1]
    )


def completion_logits(model: torch.nn.Module, packed: Packed) -> Tensor:
    """Logits predicting each completion token, ``[B, C, V]``; the LM head runs on completion positions only."""
    out = model(
        input_ids=packed.input_ids_BL,
        attention_mask=packed.attention_mask_BL,
        position_ids=packed.position_ids_BL,
        logits_to_keep=packed.num_completion + 1,
        use_cache=False,
    )
    return out.logits[:, :-1]


def completion_hidden(model: torch.nn.Module, packed: Packed) -> Tensor:
    """The hidden states the LM head reads at each completion position, ``[B, C, H]``: ``completion_logits``
    without the head. The forward is the model's own (so DDP's hooks and peft's adapters run); a hook hands the
    head an empty input and keeps what it was given."""
    kept: list[Tensor] = []

    def swallow(_module: torch.nn.Module, args: tuple) -> tuple:
        kept.append(args[0])
        return (args[0][:, :0],)

    handle = output_head(model).register_forward_pre_hook(swallow)
    try:
        completion_logits(model, packed)  # the same forward; its logits are empty
    finally:
        handle.remove()
    return kept[0][:, :-1]


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The module that turns hidden states into logits (through DDP's ``.module`` and peft's wrappers)."""
    return getattr(model, "module", model).get_output_embeddings()


@torch.no_grad()
def head_is_separable(model: torch.nn.Module, packed: Packed) -> bool:
    """Whether the model's completion logits are exactly its plain linear head applied to ``completion_hidden``
    (no soft-capping, scaling or adapter on the head), checked on ``packed``: the condition for computing the head
    inside the loss. Both forwards run in eval mode, so dropout cannot tell them apart."""
    head = output_head(model)
    if type(head) is not torch.nn.Linear:
        return False
    was_training = model.training
    model.eval()
    try:
        logits_BCV = completion_logits(model, packed).float()
        hidden_BCH = completion_hidden(model, packed)
    finally:
        model.train(was_training)
    return bool(torch.allclose(head(hidden_BCH).float(), logits_BCV, rtol=1e-4, atol=1e-4))


def cut_at_eos(ids: Sequence[int], stop: set[int]) -> tuple[list[int], bool]:
    """Tokens up to and including the first stop id; and whether none was found."""
    for i, t in enumerate(ids):
        if t in stop:
            return list(ids[: i + 1]), False
    return list(ids), True


class SeededSampler(LogitsProcessor):
    """Samples row b from softmax(logits / temperature) (top-p filtered) with row b's own generator, by Gumbel-max.

    ``generate`` then runs greedy over the perturbed scores: argmax(logits / T + Gumbel noise) is an exact draw from
    the softmax, and each row's noise comes from its own seeded stream, so a row's tokens depend on its seed and
    its prompt, not on which other rows share the batch (up to ties broken by last-bit float differences).
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def __call__(self, input_ids: Tensor, scores_BV: Tensor) -> Tensor:
        scores_BV = scores_BV.float() / self.temperature
        if self.top_p is not None:
            scores_BV = self.top_p(input_ids, scores_BV)
        return scores_BV + gumbel_noise(scores_BV, self.generators)  # -inf (masked) stays -inf


def gumbel_noise(like_BV: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """Gumbel(0, 1) noise shaped like ``like_BV``, row b from ``generators[b]``.

    -log(-log U) from uniforms: on CPU 3.6x faster than -log of ``exponential_`` draws (2.2 vs 8.0 ms for 8 x 49152,
    one thread, measured side by side)."""
    u_BV = torch.stack([torch.rand(like_BV.shape[-1], generator=g, device=like_BV.device) for g in generators])
    return -torch.log(-torch.log(u_BV.clamp_min(torch.finfo(u_BV.dtype).tiny)))


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 128,
    num_generations: int = 1,
    do_sample: bool = True,
    min_new_tokens: int = 0,
    logprobs: bool = True,
    seeds: Sequence[int] | None = None,
    prepack: str = "auto",
) -> Rollout:
    """Sample ``num_generations`` completions per prompt with the KV cache (HF ``generate``).

    Generation j of prompt i draws from its own stream, seeded with ``row_seed(seeds[i], j)``; without ``seeds``
    each prompt's seed comes from torch's global generator. ``logprobs=False`` skips the sampled tokens' log-probs:
    ``generate`` then keeps no per-step logits (rows x new tokens x vocabulary floats) and no log-softmax runs.
    ``prepack``: on a CPU, where to decode with prepacked matmul weights: auto (bf16), on (fp32 too), off
    (``selfdistill.training.prepack``).
    """

    rows = [p for p in prompts for _ in range(num_generations)]
    prompt_index = [i for i in range(len(prompts)) for _ in range(num_generations)]
    device = next(model.parameters()).device
    ids, mask = left_pad(rows, tok.pad_token_id)
    stop = eos_ids(tok, model)
    was_training = model.training
    model.eval()
    processors = []
    if do_sample:
        if seeds is None:
            seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()
        elif len(seeds) != len(prompts):
            raise ValueError(f"sample: {len(seeds)} seeds for {len(prompts)} prompts")
        processors.append(SeededSampler(row_seeds(seeds, num_generations), temperature, top_p, device))
    with prepacked_linears(model, rows=len(rows), mode=prepack):
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,  # greedy over the SeededSampler's perturbed scores is the sample
            logits_processor=processors,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop,
            pad_token_id=tok.pad_token_id,
            output_logits=logprobs,
            return_dict_in_generate=True,
            **({"min_new_tokens": min_new_tokens} if min_new_tokens else {}),
        )
    model.train(was_training)
    new_BC = out.sequences[:, ids.shape[1] :].cpu()
    if logprobs:
        # Raw logits (before temperature/top-p), so the log-probs are of the sampling distribution at `temperature`.
        logits_BCV = torch.stack(out.logits, dim=1).float().cpu()
        logprobs_BC = torch.log_softmax(logits_BCV / (temperature if do_sample else 1.0), dim=-1)
        rows_logprobs = logprobs_BC.gather(-1, new_BC.unsqueeze(-1)).squeeze(-1).tolist()
    else:
        rows_logprobs = [[] for _ in range(new_BC.shape[0])]
    completions, sample_logprobs, hit_cap = [], [], []
    for row, lp in zip(new_BC.tolist(), rows_logprobs, strict=True):
        comp, capped = cut_at_eos(row, set(stop))
        completions.append(comp)
        sample_logprobs.append(lp[: len(comp)])
        hit_cap.append(capped)
    return Rollout(completions, prompt_index, sample_logprobs, hit_cap)
