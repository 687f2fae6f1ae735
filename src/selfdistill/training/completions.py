"""Where a micro-batch's completions come from, chosen once at setup: a source is ``(idx, seeds, step, stats) ->
Completions`` for the example indices ``idx`` with one sampling seed per row.

    source = sampled(student_engine, student_prompts, sampling)                       # sdft
    source = mixed(sampled(teacher_engine, teacher_prompts, sampling), source, 0.5, None, seed, total_steps)
    batch = source(idx, seeds, step, stats)

The named sources: ``demonstrations`` (sft), ``sampled`` from an engine (the student without the demonstration for
sdft, the teacher with it for seqkd), ``filtered`` (seqkd's scorer drops rewrites), ``corrected`` (the student's
tokens checked by the teacher as they are drawn) and ``mixed`` (some rows the teacher's, the warm start).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from selfdistill.training.engines import RolloutEngine, Sampling
from selfdistill.training.engines.base import row_seeds


@dataclass
class Completions:
    """One micro-batch's completions: which example each row belongs to, its tokens, whether it hit the cap, and
    the sampler's log-prob of each token (empty for demonstrations)."""

    rows: list[int]
    """The example index of each row (a prompt sampled ``num_generations`` times appears that often)."""
    ids: list[list[int]]
    """The completion tokens of each row."""
    hit_cap: list[bool]
    """Whether the row stopped at the length cap rather than at an end of turn."""
    sampler_logprobs: list[list[float]]
    """The sampler's log-prob of each token (what TIS compares with the trainer's)."""
    keep: list[bool] | None = None
    """Rows that count in the loss (None: all); seqkd's filter drops rewrites the scorer rejects."""
    teacher_logits_BCV: torch.Tensor | None = None
    """The teacher's logits on these completions where the rollout already computed them (corrected rollouts)."""

    @staticmethod
    def concat(parts: list[Completions]) -> Completions:
        return Completions(
            *([x for p in parts for x in getattr(p, f)] for f in ("rows", "ids", "hit_cap", "sampler_logprobs"))
        )


Stats = dict[str, list[float]]
Source = Callable[[list[int], list[int], int, Stats], Completions]
"""``(idx, seeds, step, stats) -> Completions``: a micro-batch's completions; it may log into ``stats``."""


def collect(stats: Stats, key: str, value: float) -> None:
    """Add one micro-batch's value of ``key``; the step logs the mean over its micro-batches."""
    stats.setdefault(key, []).append(value)


def batch_order(num_examples: int, batch_size: int, seed: int, batch_index: int) -> list[int]:
    """Example indices of micro-batch ``batch_index``: a fresh seeded permutation every epoch, no example dropped."""
    per_epoch = math.ceil(num_examples / batch_size)
    epoch, pos = divmod(batch_index, per_epoch)
    perm = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return perm[pos * batch_size : (pos + 1) * batch_size]


def demonstrations(demos: Sequence[list[int]]) -> Source:
    """The demonstrations themselves (sft): nothing is sampled."""
    return lambda idx, seeds, step, stats: Completions(list(idx), [demos[i] for i in idx], [False] * len(idx), [])


def sampled(engine: RolloutEngine, prompts: Sequence[list[int]], sampling: Sampling) -> Source:
    """``engine``'s samples on ``prompts`` (each row from its own seed), from weights of version ``step``."""

    def source(idx: list[int], seeds: list[int], step: int, stats: Stats) -> Completions:
        ro = engine.generate([prompts[i] for i in idx], sampling, version=step, seeds=seeds)
        return Completions([idx[j] for j in ro.prompt_index], ro.completions, ro.hit_cap, ro.sample_logprobs)

    return source


def filtered(source: Source, accept: Callable[[int, str], bool], tok) -> Source:
    """``source``'s rows, with those the task's scorer rejects kept out of the loss (seqkd's filter); logs the share
    kept."""

    def source_filtered(idx: list[int], seeds: list[int], step: int, stats: Stats) -> Completions:
        batch = source(idx, seeds, step, stats)
        texts = tok.batch_decode(batch.ids, skip_special_tokens=True)
        batch.keep = [accept(i, text) for i, text in zip(batch.rows, texts, strict=True)]
        collect(stats, "seqkd_kept", float(np.mean(batch.keep)))
        return batch

    return source_filtered


def corrected(
    corrector: Callable, student_prompts: Sequence[list[int]], teacher_prompts: Sequence[list[int]], generations: int
) -> Source:
    """The student's samples, each token checked by the teacher as it is drawn (``corrected_sample``); the teacher's
    logits come along, so the loss need not run the teacher again. Logs the acceptance rate."""

    def source(idx: list[int], seeds: list[int], step: int, stats: Stats) -> Completions:
        rows = [i for i in idx for _ in range(generations)]
        out = corrector(
            [student_prompts[i] for i in rows], [teacher_prompts[i] for i in rows], row_seeds(seeds, generations)
        )
        collect(stats, "acceptance_rate", out.acceptance_rate)
        ro = out.rollout
        return Completions(rows, ro.completions, ro.hit_cap, ro.sample_logprobs, None, out.teacher_logits_BCV)

    return source


def mix_fraction(teacher_mix: float, until: float | None, step: int, total_steps: int) -> float:
    """The share of sdft rollouts the teacher samples at ``step``: ``teacher_mix``, falling linearly to 0 at
    ``until`` of the steps when that is set."""
    if until is None:
        return teacher_mix
    return teacher_mix * max(0.0, 1.0 - step / (until * total_steps))


def teacher_rows(fraction: float, n: int, rng: random.Random) -> list[int]:
    """Which of ``n`` rows the teacher samples: ``fraction · n`` of them, rounded up or down at random so the
    expected share is exactly ``fraction``."""
    count = int(fraction * n)
    count += rng.random() < fraction * n - count
    return sorted(rng.sample(range(n), count))


def _split(values: list, chosen: set[int]) -> tuple[list, list]:
    """The values at the ``chosen`` positions, and the rest, each in order."""
    return [v for j, v in enumerate(values) if j in chosen], [v for j, v in enumerate(values) if j not in chosen]


def mixed(
    teacher: Source, student: Source, teacher_mix: float, until: float | None, seed: int, total_steps: int
) -> Source:
    """The warm start: a share ``mix_fraction(...)`` of the rows from ``teacher`` (drawn per step, seeded), the rest
    from ``student``; teacher rows first. Logs the share asked for and the share drawn."""

    def source(idx: list[int], seeds: list[int], step: int, stats: Stats) -> Completions:
        fraction = mix_fraction(teacher_mix, until, step, total_steps)
        by_teacher = set(teacher_rows(fraction, len(idx), random.Random(hash((seed, step, *idx)))))
        teacher_idx, student_idx = _split(idx, by_teacher)
        teacher_seeds, student_seeds = _split(seeds, by_teacher)
        collect(stats, "teacher_mix", fraction)
        collect(stats, "teacher_rows", len(teacher_idx) / len(idx))
        if not teacher_idx:
            return student(student_idx, student_seeds, step, stats)
        teacher_part = teacher(teacher_idx, teacher_seeds, step, stats)
        if not student_idx:
            return teacher_part
        return Completions.concat([teacher_part, student(student_idx, student_seeds, step, stats)])

    return source
