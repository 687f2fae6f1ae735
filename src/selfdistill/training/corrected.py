"""Teacher-corrected rollouts, after Speculative KD (arXiv 2410.11325): the student proposes, the teacher vetoes.

    out = corrected_sample(student, teacher, tok, student_prompts, teacher_prompts, k=25)
    out.rollout, out.accepted, out.acceptance_rate, out.teacher_logits_BCV

At each position the student samples a token; when it is not among the teacher's top-k (the teacher reading its own
prompt, demonstration included, plus the tokens chosen so far) a token sampled from the teacher replaces it. Both
models keep a KV cache and are fed the chosen token, so a step costs one incremental forward of each; a live teacher
(the student module itself) gets a second cache. The teacher logits of every step are kept for the loss.
Shapes: B rows, P prompt columns (left padded), L = P + tokens so far, T tokens fed in one forward, C completion
tokens, V vocabulary. The kept teacher logits take B·C·V fp32 (twice that for a moment, while stacked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from selfdistill.training.engines.base import Rollout, row_seeds, seed_for
from selfdistill.training.rollout import CACHE_KEY, cut_at_eos, eos_ids, gumbel_noise, left_pad
from selfdistill.training.teacher import eval_mode


@dataclass
class Corrected:
    rollout: Rollout
    """The completions; sample_logprobs are under the model that drew each token (at temperature, before top-p)."""
    accepted: list[list[bool]]
    """Per completion token: True where the student's token was kept, False where the teacher's replaced it."""
    teacher_logits_BCV: Tensor
    """Raw teacher logits predicting each completion token, fp32 on the teacher's device, zero past a row's end."""

    @property
    def acceptance_rate(self) -> float:
        """Kept tokens over all completion tokens (1.0 when there are none)."""
        total = sum(len(a) for a in self.accepted)
        return sum(sum(a) for a in self.accepted) / total if total else 1.0


class _Decoder:
    """One model decoding a left-padded batch with its own KV cache; ``logits_BV`` predicts the next token."""

    def __init__(self, model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int):
        self.model = model
        self.device = next(model.parameters()).device
        ids_BP, mask_BP = left_pad(prompts, pad_id)
        self.mask_BL = mask_BP.to(self.device)
        self.next_pos_B = self.mask_BL.sum(-1)
        self._run(ids_BP.to(self.device), (self.mask_BL.cumsum(-1) - 1).clamp(min=0), cache=None)

    def feed(self, ids_B: Tensor) -> None:
        self.mask_BL = torch.cat([self.mask_BL, self.mask_BL.new_ones(len(ids_B), 1)], dim=1)
        self._run(ids_B.to(self.device)[:, None], self.next_pos_B[:, None], self.cache)
        self.next_pos_B = self.next_pos_B + 1

    def _run(self, ids_BT: Tensor, position_ids_BT: Tensor, cache) -> None:
        out = self.model(
            input_ids=ids_BT,
            attention_mask=self.mask_BL,
            position_ids=position_ids_BT,
            use_cache=True,
            logits_to_keep=1,
            **{CACHE_KEY: cache},
        )
        self.cache = out[CACHE_KEY]
        self.logits_BV = out.logits[:, -1].float()


def _nucleus(probs_BV: Tensor, top_p: float) -> Tensor:
    """Zero the probabilities outside the top-p nucleus (left unnormalised: only which are zero is read)."""
    if top_p >= 1.0:
        return probs_BV
    sorted_BV, order_BV = probs_BV.sort(dim=-1, descending=True)
    # The nucleus is the shortest head reaching top_p: a token is out once the mass ranked above it does.
    out_BV = sorted_BV.cumsum(-1) - sorted_BV >= top_p
    return probs_BV.scatter(-1, order_BV, sorted_BV.masked_fill(out_BV, 0.0))


def _draw(
    logits_BV: Tensor, temperature: float, top_p: float, generators: Sequence[torch.Generator]
) -> tuple[Tensor, Tensor]:
    """A token per row from softmax(logits / temperature) within the nucleus, drawn with row b's own generator
    (Gumbel-max, as rollout.SeededSampler), and its log-prob at temperature."""
    z_BV = logits_BV.float() / temperature
    out_BV = (
        _nucleus(torch.softmax(z_BV, dim=-1), top_p) == 0 if top_p < 1.0 else torch.zeros_like(z_BV, dtype=torch.bool)
    )
    ids_B = (z_BV.masked_fill(out_BV, float("-inf")) + gumbel_noise(z_BV, generators)).argmax(-1)
    return ids_B, z_BV.gather(-1, ids_B[:, None]).squeeze(-1) - torch.logsumexp(z_BV, dim=-1)


def _check(k: int, temperature: float, top_p: float, max_new_tokens: int, counts: tuple[int, int]) -> None:
    if k < 1:
        raise ValueError(f"k (the teacher's top-k) must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for corrected sampling, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if counts[0] != counts[1]:
        raise ValueError(f"{counts[0]} student prompts but {counts[1]} teacher prompts")


@torch.no_grad()
def corrected_sample(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    student_prompts: Sequence[Sequence[int]],
    teacher_prompts: Sequence[Sequence[int]],
    *,
    k: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 128,
    seeds: Sequence[int] | None = None,
) -> Corrected:
    """One completion per prompt, each student token kept only if it is in the teacher's top-k, else resampled
    from the teacher. Top-k counts ties: a token is in it when fewer than k tokens have a larger teacher logit.

    Row b's student draws come from a stream seeded ``row_seed(seeds[b], 0)``, the one ``rollout.sample`` uses,
    and its teacher redraws from a second stream; without ``seeds`` they are drawn from torch's global generator.
    """
    _check(k, temperature, top_p, max_new_tokens, (len(student_prompts), len(teacher_prompts)))
    if seeds is None:
        seeds = torch.randint(0, 2**62, (len(student_prompts),)).tolist()
    elif len(seeds) != len(student_prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(student_prompts)} prompts")
    if not all(student_prompts) or not all(teacher_prompts):
        raise ValueError("every student and teacher prompt needs at least one token")
    with eval_mode(student), eval_mode(teacher):
        s = _Decoder(student, student_prompts, tok.pad_token_id)
        t = _Decoder(teacher, teacher_prompts, tok.pad_token_id)
        vocab = t.logits_BV.shape[-1]
        if s.logits_BV.shape[-1] != vocab:
            raise ValueError(f"student vocabulary {s.logits_BV.shape[-1]} != teacher vocabulary {vocab}")
        if k > vocab:
            raise ValueError(f"k (the teacher's top-k) must be <= the vocabulary size {vocab}, got {k}")
        stop = torch.tensor(eos_ids(tok, student), device=s.device)
        done_B = torch.zeros(len(student_prompts), dtype=torch.bool, device=s.device)
        student_gens = [torch.Generator(device=s.device).manual_seed(r) for r in row_seeds(seeds, 1)]
        teacher_gens = [torch.Generator(device=s.device).manual_seed(seed_for(r, 1)) for r in row_seeds(seeds, 1)]
        ids, kept, logps, teacher_logits = [], [], [], []
        for step in range(max_new_tokens):
            teacher_logits.append(t.logits_BV)
            q_BV = t.logits_BV.to(s.device)
            ids_B, logp_B = _draw(s.logits_BV, temperature, top_p, student_gens)
            keep_B = (q_BV > q_BV.gather(-1, ids_B[:, None])).sum(-1) < k
            fix_B = ~keep_B & ~done_B
            if fix_B.any():
                fix = fix_B.nonzero().squeeze(-1).tolist()
                ids_B[fix_B], logp_B[fix_B] = _draw(q_BV[fix_B], temperature, top_p, [teacher_gens[b] for b in fix])
            ids_B = ids_B.masked_fill(done_B, tok.pad_token_id)
            ids.append(ids_B)
            kept.append(keep_B)
            logps.append(logp_B)
            done_B = done_B | torch.isin(ids_B, stop)
            if step == max_new_tokens - 1 or done_B.all():
                break
            s.feed(ids_B)
            t.feed(ids_B)
    return _collect(ids, kept, logps, teacher_logits, set(stop.tolist()))


def _collect(
    ids: list[Tensor], kept: list[Tensor], logps: list[Tensor], teacher_logits: list[Tensor], stop: set[int]
) -> Corrected:
    """Per-step tensors to per-row lists cut at EOS, and the teacher logits zeroed past each row's end."""
    completions, accepted, sample_logprobs, hit_cap = [], [], [], []
    rows = zip(*(torch.stack(x, dim=1).tolist() for x in (ids, kept, logps)), strict=True)
    for row_ids, row_kept, row_logps in rows:
        comp, capped = cut_at_eos(row_ids, stop)
        completions.append(comp)
        accepted.append(row_kept[: len(comp)])
        sample_logprobs.append(row_logps[: len(comp)])
        hit_cap.append(capped)
    teacher_logits_BCV = torch.stack(teacher_logits, dim=1)
    lengths_B = torch.tensor([len(c) for c in completions], device=teacher_logits_BCV.device)
    past_end_BC = torch.arange(teacher_logits_BCV.shape[1], device=lengths_B.device) >= lengths_B[:, None]
    teacher_logits_BCV.masked_fill_(past_end_BC[..., None], 0.0)
    rollout = Rollout(completions, list(range(len(completions))), sample_logprobs, hit_cap)
    return Corrected(rollout, accepted, teacher_logits_BCV)
