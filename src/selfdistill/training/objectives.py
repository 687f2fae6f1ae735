"""The loss on a micro-batch's task rows, picked once at setup from the method and the model.

    target = objective.target(task)                                   # the teacher's side, no grad (or None)
    student_BC_, *term_outs = joint_forward(objective.per_position, trained, [task.rows, ...], pad_id, device)
    scored = objective.loss(student_BC_, target, task, stats)         # scored.loss: this rank's scalar
    objective.log(stats, scored, task)                                # no-grad diagnostics

- ``HeadForwardKL``: sdft's default (forward KL, full vocabulary) from hidden states, the LM heads run inside the
  loss chunk by chunk, so no ``[B, C, V]`` logits exist.
- ``LogitsDivergence``: any sdft divergence and support on materialized logits (teacher temperature; TIS weights).
- ``NLL``: sft and seqkd, token NLL of the completion (TIS weights when an engine sampled for seqkd).
Letters: B rows, C completion tokens, V vocabulary, H hidden size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from selfdistill.training import losses
from selfdistill.training.completions import Completions, Stats, collect
from selfdistill.training.rollout import Packed, completion_hidden, completion_logits, output_head, pack
from selfdistill.training.teacher import Teacher
from selfdistill.training.terms import Timer, TISWeights


@dataclass
class TaskBatch:
    """One micro-batch's task rows as the loss sees them: packed for the student, and for the teacher on demand."""

    completions: Completions
    """Where the rows' completions came from, with the rows' example indices."""
    rows: tuple[list[list[int]], list[list[int]]]
    """``(student prompts, completions)``, the student's input."""
    student: Packed
    """The rows packed for the student, on the device."""
    teacher_prompts: Sequence[list[int]]
    """Every example's teacher prompt (empty for sft, which has no teacher)."""
    device: torch.device
    """Where the packed rows go."""
    pad_id: int
    """The tokenizer's pad id."""

    @staticmethod
    def of(completions: Completions, student_prompts: Sequence[list[int]], teacher_prompts, pad_id, device):
        rows = ([student_prompts[i] for i in completions.rows], completions.ids)
        return TaskBatch(completions, rows, pack(*rows, pad_id).to(device), teacher_prompts, device, pad_id)

    @functools.cached_property
    def teacher(self) -> Packed:
        """``[teacher prompt | completion]`` rows, packed the first time a part asks."""
        prompts = [self.teacher_prompts[i] for i in self.completions.rows]
        return pack(prompts, self.completions.ids, self.pad_id).to(self.device)

    def mask(self, skip_first_tokens: int) -> Tensor:
        """mask_BC of the completion tokens that count: not padding, not a dropped row, not among the first
        ``skip_first_tokens``."""
        mask_BC = self.student.completion_mask_BC.clone()
        if self.completions.keep is not None:
            mask_BC[~torch.tensor(self.completions.keep, device=self.device)] = 0
        mask_BC[:, :skip_first_tokens] = 0
        return mask_BC


@dataclass
class Scored:
    """An objective's result on one micro-batch."""

    loss: Tensor
    """The scalar loss over this rank's rows (before the rank scale)."""
    loss_BC: Tensor
    """The per-token loss (for the fused head: the forward KL, without grad)."""
    mask_BC: Tensor
    """The tokens that count."""
    token_stats_BC: dict[str, Tensor]
    """Per-token diagnostics of the teacher against the student (sdft)."""
    student_logits_BCV: Tensor | None = None
    """The student's logits, where they were materialized."""
    teacher_logits_BCV: Tensor | None = None
    """The teacher's target logits (temperature applied), where they were materialized."""


class Objective(Protocol):
    per_position: Callable[[torch.nn.Module, Packed], Tensor]
    """What the student's forward yields per completion position: ``completion_logits`` or ``completion_hidden``."""

    def target(self, task: TaskBatch) -> Tensor | None: ...
    def loss(self, student_BC_: Tensor, target: Tensor | None, task: TaskBatch, stats: Stats) -> Scored: ...
    def log(self, stats: Stats, scored: Scored, task: TaskBatch) -> None: ...


@dataclass
class NLL:
    """Token NLL of the completion (sft: the demonstration; seqkd: the teacher's rewrite)."""

    weighting: TISWeights | None = None
    """Importance weights when an engine other than the trainer's model sampled."""
    per_position = staticmethod(completion_logits)

    def target(self, task: TaskBatch) -> None:
        return None

    def loss(self, student_logits_BCV: Tensor, target: None, task: TaskBatch, stats: Stats) -> Scored:
        mask_BC = task.mask(0)
        loss_BC = losses.token_nll(student_logits_BCV, task.student.completion_ids_BC)
        loss = _weighted_mean(self.weighting, loss_BC, task, student_logits_BCV, mask_BC, stats)
        return Scored(loss, loss_BC, mask_BC, {}, student_logits_BCV)

    def log(self, stats: Stats, scored: Scored, task: TaskBatch) -> None:
        pass


@dataclass
class LogitsDivergence:
    """sdft's divergence per token between the teacher's and the student's materialized logits."""

    teacher: Teacher
    """The teacher, run on ``[teacher prompt | completion]`` without grad."""
    divergence: str
    """forward, reverse or jsd."""
    support: str
    """full, topk or sampled."""
    k: int
    """The teacher's top-k for ``support="topk"``."""
    beta: float
    """The JSD's mixing weight."""
    teacher_temperature: float
    """The target is softmax(teacher logits / τ)."""
    skip_first_tokens: int
    """Completion tokens at the start that do not count."""
    chunk_size: int
    """Positions per chunk of the loss."""
    timer: Timer
    """Accounts the teacher's forward to the ``teacher`` phase."""
    weighting: TISWeights | None = None
    """Importance weights when an engine other than the trainer's model sampled."""
    temperature: float = 1.0
    """Both logits are divided by T in the divergence (``--loss-temperature rollout``: the rollout temperature)."""
    per_position = staticmethod(completion_logits)

    def target(self, task: TaskBatch) -> Tensor:
        with self.timer("teacher"):
            given_BCV = task.completions.teacher_logits_BCV  # corrected rollouts computed them already
            teacher_logits_BCV = self.teacher.completion_logits(task.teacher) if given_BCV is None else given_BCV
            teacher_logits_BCV = teacher_logits_BCV.to(task.device)
            if self.teacher_temperature != 1:  # the target is softmax(logits / τ)
                teacher_logits_BCV = teacher_logits_BCV / self.teacher_temperature
        return teacher_logits_BCV

    def loss(self, student_logits_BCV: Tensor, teacher_logits_BCV: Tensor, task: TaskBatch, stats: Stats) -> Scored:
        mask_BC = task.mask(self.skip_first_tokens)
        # the per-token diagnostics come from the loss's own pass where it allows
        loss_BC, token_stats_BC = losses.distill_loss_and_stats(
            student_logits_BCV,
            teacher_logits_BCV,
            task.student.completion_ids_BC,
            divergence=self.divergence,
            support=self.support,
            k=self.k,
            beta=self.beta,
            chunk_size=self.chunk_size,
            temperature=self.temperature,
        )
        loss = _weighted_mean(self.weighting, loss_BC, task, student_logits_BCV, mask_BC, stats)
        return Scored(loss, loss_BC, mask_BC, token_stats_BC, student_logits_BCV, teacher_logits_BCV)

    def log(self, stats: Stats, scored: Scored, task: TaskBatch) -> None:
        kl_BC = scored.loss_BC  # the forward KL whatever the loss is, for runs to compare
        if (self.divergence, self.support, self.temperature) != ("forward", "full", 1.0):
            ids_BC = task.student.completion_ids_BC
            kl_BC = losses.distill_loss(
                scored.student_logits_BCV, scored.teacher_logits_BCV, ids_BC, chunk_size=self.chunk_size
            )
        _log_distill(stats, kl_BC, scored)


@dataclass
class HeadForwardKL:
    """sdft's default loss, forward KL over the full vocabulary, from the hidden states the LM heads read: the heads
    run inside the loss (``losses.head_forward_kl``). Exact only where a model's logits are its plain linear head
    on those states (``rollout.head_is_separable``); setup checks that."""

    student: torch.nn.Module
    """The student (unwrapped), whose head the loss runs."""
    teacher: Teacher
    """The teacher, run on ``[teacher prompt | completion]`` without grad."""
    teacher_temperature: float
    """The target is softmax(teacher logits / τ)."""
    skip_first_tokens: int
    """Completion tokens at the start that do not count."""
    chunk_size: int
    """Positions per chunk of the loss."""
    timer: Timer
    """Accounts the teacher's forward to the ``teacher`` phase."""
    temperature: float = 1.0
    """Both logits are divided by T in the divergence (``--loss-temperature rollout``: the rollout temperature)."""
    per_position = staticmethod(completion_hidden)

    def target(self, task: TaskBatch) -> Tensor:
        with self.timer("teacher"):
            return self.teacher.completion_hidden(task.teacher)

    def loss(self, student_hidden_BCH: Tensor, teacher_hidden_BCH: Tensor, task: TaskBatch, stats: Stats) -> Scored:
        mask_BC = task.mask(self.skip_first_tokens)
        loss, kl_BC, token_stats_BC = losses.head_forward_kl(
            student_hidden_BCH,
            output_head(self.student),
            teacher_hidden_BCH,
            output_head(self.teacher.model),
            task.student.completion_ids_BC,
            losses.masked_mean_weights(mask_BC),
            chunk_size=self.chunk_size,
            teacher_temperature=self.teacher_temperature,
            temperature=self.temperature,
        )
        return Scored(loss, kl_BC, mask_BC, token_stats_BC)

    def log(self, stats: Stats, scored: Scored, task: TaskBatch) -> None:
        _log_distill(stats, scored.loss_BC, scored)


def _weighted_mean(
    weighting: TISWeights | None, loss_BC: Tensor, task: TaskBatch, logits_BCV: Tensor, mask_BC: Tensor, stats: Stats
) -> Tensor:
    """The masked mean of ``loss_BC``, each token weighed toward the trainer's model where an engine sampled."""
    if weighting is None:
        return losses.masked_mean(loss_BC, mask_BC)
    return losses.masked_mean(loss_BC * weighting(task, logits_BCV, stats), mask_BC)


def _log_distill(stats: Stats, kl_BC: Tensor, scored: Scored) -> None:
    """The forward KL and the per-token teacher/student diagnostics, masked means."""
    collect(stats, "kl", losses.masked_mean(kl_BC.detach(), scored.mask_BC).item())
    for name, val_BC in scored.token_stats_BC.items():
        collect(stats, name, losses.masked_mean(val_BC, scored.mask_BC).item())


def joint_forward(
    per_position: Callable[[torch.nn.Module, Packed], Tensor],
    model: torch.nn.Module,
    parts: list[tuple[list[list[int]], list[list[int]]]],
    pad_id: int,
    device: torch.device,
) -> list[Tensor]:
    """``per_position`` (``completion_logits`` or ``completion_hidden``) of each ``(prompts, completions)`` part, as
    ``pack`` of that part alone would line them up, from one forward over all their rows (so one backward, as DDP
    wants)."""
    prompts = [p for part_prompts, _ in parts for p in part_prompts]
    completions = [c for _, part_completions in parts for c in part_completions]
    out_RC_ = per_position(model, pack(prompts, completions, pad_id).to(device))
    out, start = [], 0
    for _, part_completions in parts:
        width = max(1, max(len(c) for c in part_completions))  # pack's completion width for the part
        out.append(out_RC_[start : start + len(part_completions), :width])
        start += len(part_completions)
    return out
