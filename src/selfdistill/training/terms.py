"""Extra loss terms and weightings of the objective, chosen once at setup.

    draw, *_ = anchor.draws(micro_indices, step, cap)   # each micro-batch's own rows, sampled in one generation
    draw.reference()                             # its frozen target, no grad (before the student's forward)
    loss = loss + draw.loss(student_AC_)         # the student's outputs on its rows, from the one joint forward
    draw.log(stats)

A term owns its prompts, its sampling and its reference; the loop only hands it the student's outputs on its rows
(``draw.rows`` join the task rows in one forward, so one backward, as DDP wants). ``TISWeights`` is not a term but a
weighting the objective applies to its per-token loss. Letters: A anchor rows, C completion tokens, V vocabulary,
H hidden size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from selfdistill.training import losses
from selfdistill.training.anchor import AnchorReference
from selfdistill.training.completions import Stats, collect, micro_rows, sampled, step_completions
from selfdistill.training.correction import tis_stats, tis_weights, token_logprobs
from selfdistill.training.engines import RolloutEngine, Sampling
from selfdistill.training.ranks import Ranks
from selfdistill.training.rollout import Packed, output_head, pack
from selfdistill.training.teacher import Teacher

Timer = Callable[[str], AbstractContextManager]
"""``with timer("phase"): ...`` accounts the block's seconds to that phase of the step."""

ANCHOR_STREAM = 1
"""Anchor rollouts are seeded (run seed, micro-batch, position, ANCHOR_STREAM): apart from the task rows' streams."""


class TermBatch(Protocol):
    """A term's share of one micro-batch."""

    rows: tuple[list[list[int]], list[list[int]]]
    """``(prompts, completions)`` the student's forward runs on, beside the task rows."""

    def reference(self) -> None: ...
    def loss(self, student_RC_: Tensor) -> Tensor: ...
    def log(self, stats: Stats) -> None: ...


class Term(Protocol):
    def draws(self, micro_indices: Sequence[int], step: int, cap: int | None) -> list[TermBatch]:
        """One batch per micro-batch of the step; rows sampled in calls of at most ``cap`` rows (None: one)."""
        ...


@dataclass
class ReplayAnchor:
    """``weight · KL(start model ‖ student)`` on the student's own samples for prompts that are not the task's
    (anchor.py): forward KL over the full vocabulary, with the LM heads inside the loss (``fused``) or on
    materialized logits, as the objective runs its own."""

    prompts: Sequence[list[int]]
    """The anchor prompts, tokenized as the student sees a prompt."""
    batch_size: int
    """Anchor rows per micro-batch (over all ranks)."""
    seed: int
    """The run's seed: the order of the anchor rows and their sampling streams derive from it."""
    engine: RolloutEngine
    """The student's engine, which samples the anchor completions."""
    sampling: Sampling
    """How the anchor completions are sampled (one per prompt)."""
    reference: AnchorReference
    """The start model, frozen: the target of the term."""
    student: torch.nn.Module
    """The student (unwrapped), whose LM head the fused loss runs."""
    weight: float
    """The term's weight in the loss (--anchor-weight)."""
    fused: bool
    """Whether the student's outputs are hidden states (the head runs inside the loss) or logits."""
    chunk_size: int
    """Positions per chunk of the loss."""
    ranks: Ranks
    """This process's share of the global anchor batch, and the scale that makes DDP's average a global mean."""
    pad_id: int
    """The tokenizer's pad id."""
    device: torch.device
    """Where the packed rows go."""
    timer: Timer
    """Accounts the reference's forward to the ``anchor`` phase."""

    def draws(self, micro_indices: Sequence[int], step: int, cap: int | None) -> list[AnchorBatch]:
        """Each micro-batch's anchor rows and the student's samples on them (weights of version ``step``), sampled
        for several micro-batches at once (``completions.step_completions``)."""
        shares = [
            micro_rows(
                len(self.prompts),
                self.batch_size,
                self.seed,
                self.ranks,
                m,
                order_seed=self.seed + 1,
                stream=(ANCHOR_STREAM,),
            )
            for m in micro_indices
        ]
        source = sampled(self.engine, self.prompts, self.sampling)
        batches = step_completions(source, [(idx, seeds) for idx, seeds, _ in shares], step, {}, cap)
        out = []
        for batch, (idx, _, global_rows) in zip(batches, shares, strict=True):
            rows = ([self.prompts[i] for i in batch.rows], batch.ids)
            scale = self.ranks.loss_scale(len(idx), global_rows)
            out.append(AnchorBatch(self, rows, pack(*rows, self.pad_id).to(self.device), scale))
        return out


@dataclass
class AnchorBatch:
    """One micro-batch of the replay anchor: its rows, their reference outputs once computed, and the KL."""

    term: ReplayAnchor
    """The term it was drawn by."""
    rows: tuple[list[list[int]], list[list[int]]]
    """``(prompts, completions)`` for the student's joint forward."""
    packed: Packed
    """The rows packed as ``pack`` lines them up alone (the reference's input, the loss's token ids and mask)."""
    scale: float
    """DDP's average over ranks times this is the mean over the global anchor rows."""
    ref_AC_: Tensor | None = None
    """The start model's hidden states (fused) or logits on the rows."""
    kl: Tensor | None = None
    """The masked-mean KL, once the loss ran."""

    def reference(self) -> None:
        term = self.term
        with term.timer("anchor"):
            self.ref_AC_ = (term.reference.hidden if term.fused else term.reference)(self.packed)

    def loss(self, student_AC_: Tensor) -> Tensor:
        term, ids_AC, mask_AC = self.term, self.packed.completion_ids_BC, self.packed.completion_mask_BC
        if term.fused:  # the heads run inside the loss: no [A, C, V] logits
            self.kl = losses.head_forward_kl(
                student_AC_,
                output_head(term.student),
                self.ref_AC_,
                output_head(term.reference.model),
                ids_AC,
                losses.masked_mean_weights(mask_AC),
                chunk_size=term.chunk_size,
            )[0]
        else:
            kl_AC = losses.distill_loss(student_AC_, self.ref_AC_, ids_AC, chunk_size=term.chunk_size)
            self.kl = losses.masked_mean(kl_AC, mask_AC)
        return term.weight * self.scale * self.kl

    def log(self, stats: Stats) -> None:
        collect(stats, "anchor_kl", self.kl.item())


@dataclass
class TISWeights:
    """Truncated importance weights of an engine's samples toward the trainer's own model (correction.py): the
    student's logits when the student sampled (sdft), the teacher's on its prompts when the teacher did (seqkd)."""

    mode: str
    """``prefix`` or ``sequence``."""
    cap: float
    """The largest weight."""
    temperature: float
    """The sampling temperature, at which both log-probs are taken."""
    teacher: Teacher | None
    """The model that sampled, when it is the teacher (None: the student)."""
    timer: Timer
    """Accounts the weighting to the ``tis`` phase."""

    def __call__(self, task, student_logits_BCV: Tensor, stats: Stats) -> Tensor:
        """weights_BC for ``task`` (an objectives.TaskBatch), logged. Over every sampled token, the ones the loss
        skips included: a position's prefix weight is the ratio of its whole sampled prefix."""
        with self.timer("tis"):
            own_logits_BCV = (
                student_logits_BCV if self.teacher is None else self.teacher.completion_logits(task.teacher)
            )
            ids_BC, mask_BC = task.student.completion_ids_BC, task.student.completion_mask_BC
            trainer_logp_BC = token_logprobs(own_logits_BCV, ids_BC, self.temperature)
            sampler_logp_BC = _pad_right(task.completions.sampler_logprobs, ids_BC.shape[1], ids_BC.device)
            weights_BC = tis_weights(trainer_logp_BC, sampler_logp_BC, mask_BC, self.mode, self.cap)
            for name, value in tis_stats(trainer_logp_BC, sampler_logp_BC, mask_BC, weights_BC).items():
                collect(stats, name, value)
        return weights_BC


def _pad_right(rows: list[list[float]], width: int, device: torch.device) -> Tensor:
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row[:width])
    return out.to(device)
