"""Where a step's completions come from, chosen once at setup: a source is ``(idx, seeds, step, stats) ->
Completions`` for the example indices ``idx`` with one sampling seed per row.

    source = sampled(student_engine, student_prompts, sampling)                       # sdft
    source = mixed(sampled(teacher_engine, teacher_prompts, sampling), source, 0.5, None, seed, total_steps)
    batch = source(idx, seeds, step, stats)
    micro_batches = step_completions(source, [(idx_1, seeds_1), (idx_2, seeds_2)], step, stats, cap=16)

``step_completions`` calls the source once for several micro-batches (one generation reads every weight once for
all of their rows) and hands each micro-batch its own rows back: each row is sampled from its own seed, so the rows
are those of one call per micro-batch wherever the arithmetic allows.

The named sources: ``demonstrations`` (sft), ``sampled`` from an engine (the student without the demonstration for
sdft, the teacher with it for seqkd), ``filtered`` (seqkd's scorer drops rewrites), ``corrected`` (the student's
tokens checked by the teacher as they are drawn) and ``mixed`` (some rows the teacher's, the warm start).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from selfdistill.training.engines import RolloutEngine, Sampling, seed_for
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
    origin: list[int] | None = None
    """The position in the source's ``idx`` of each row's prompt (None: row j is position j)."""

    def positions(self) -> list[int]:
        return list(range(len(self.rows))) if self.origin is None else self.origin

    @staticmethod
    def concat(parts: list[Completions]) -> Completions:
        """The rows of ``parts`` one after another (their origins as they are: positions in one shared ``idx``)."""
        fields = ("rows", "ids", "hit_cap", "sampler_logprobs")
        joined = Completions(*([x for p in parts for x in getattr(p, f)] for f in fields))
        joined.origin = [o for p in parts for o in p.positions()]
        return joined

    def moved(self, positions: Sequence[int]) -> Completions:
        """These rows, their origins mapped through ``positions`` (a sub-list's positions in the whole ``idx``)."""
        return dataclasses.replace(self, origin=[positions[o] for o in self.positions()])

    def split(self, sizes: Sequence[int]) -> list[Completions]:
        """The rows of each of consecutive ``idx`` slices of these ``sizes``, in the order they came, each with its
        origin counted from its slice's start: what calls on the slices one by one would have returned."""
        starts = np.cumsum([0, *sizes]).tolist()
        origin, parts = self.positions(), []
        for lo, hi in zip(starts[:-1], starts[1:], strict=True):
            take = [r for r, o in enumerate(origin) if lo <= o < hi]
            logits = None
            if self.teacher_logits_BCV is not None:  # padded to this call's longest row: cut to the slice's
                width = max((len(self.ids[r]) for r in take), default=0)
                logits = self.teacher_logits_BCV[take, :width]
            parts.append(
                Completions(
                    [self.rows[r] for r in take],
                    [self.ids[r] for r in take],
                    [self.hit_cap[r] for r in take],
                    [self.sampler_logprobs[r] for r in take] if self.sampler_logprobs else [],
                    None if self.keep is None else [self.keep[r] for r in take],
                    logits,
                    [origin[r] - lo for r in take],
                )
            )
        return parts


Stats = dict[str, list[float]]
Source = Callable[[list[int], list[int], int, Stats], Completions]
"""``(idx, seeds, step, stats) -> Completions``: the completions of the rows ``idx``; it may log into ``stats``."""


def generation_groups(sizes: Sequence[int], cap: int | None) -> list[list[int]]:
    """Consecutive micro-batches grouped so that each group holds at most ``cap`` rows (None: all in one); a
    micro-batch larger than ``cap`` is a group of its own, never split."""
    groups: list[list[int]] = []
    total = 0
    for m, size in enumerate(sizes):
        if groups and (cap is None or total + size <= cap):
            groups[-1].append(m)
            total += size
        else:
            groups.append([m])
            total = size
    return groups


def step_completions(
    source: Source, micro: Sequence[tuple[list[int], list[int]]], step: int, stats: Stats, cap: int | None
) -> list[Completions]:
    """Each micro-batch's completions, ``(idx, seeds)`` per micro-batch, from as few calls of ``source`` as ``cap``
    (rows per call) allows: one generation for the whole optimizer step by default."""
    out: list[Completions] = []
    for group in generation_groups([len(idx) for idx, _ in micro], cap):
        idx = [i for m in group for i in micro[m][0]]
        seeds = [s for m in group for s in micro[m][1]]
        out += source(idx, seeds, step, stats).split([len(micro[m][0]) for m in group])
    return out


def collect(stats: Stats, key: str, value: float) -> None:
    """Add one micro-batch's value of ``key``; the step logs the mean over its micro-batches."""
    stats.setdefault(key, []).append(value)


def batch_order(num_examples: int, batch_size: int, seed: int, batch_index: int) -> list[int]:
    """Example indices of micro-batch ``batch_index``: a fresh seeded permutation every epoch, no example dropped."""
    per_epoch = math.ceil(num_examples / batch_size)
    epoch, pos = divmod(batch_index, per_epoch)
    perm = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return perm[pos * batch_size : (pos + 1) * batch_size]


def micro_rows(
    rows: int, batch_size: int, seed: int, ranks, micro_index: int, *, order_seed: int | None = None, stream=()
) -> tuple[list[int], list[int], int]:
    """This rank's example indices and sampling seeds of micro-batch ``micro_index`` (``ranks.share`` of the global
    micro-batch, row j seeded by (seed, micro_index, j, *stream)), and the micro-batch's rows over all ranks. The
    order is ``batch_order``'s under ``order_seed`` (default: ``seed``); a term with rows of its own (the anchor)
    passes its own order seed and stream."""
    global_idx = batch_order(rows, batch_size, seed if order_seed is None else order_seed, micro_index)
    seeds = [seed_for(seed, micro_index, j, *stream) for j in range(len(global_idx))]
    return ranks.share(global_idx), ranks.share(seeds), len(global_idx)


def demonstrations(demos: Sequence[list[int]]) -> Source:
    """The demonstrations themselves (sft): nothing is sampled."""
    return lambda idx, seeds, step, stats: Completions(list(idx), [demos[i] for i in idx], [False] * len(idx), [])


def sampled(engine: RolloutEngine, prompts: Sequence[list[int]], sampling: Sampling) -> Source:
    """``engine``'s samples on ``prompts`` (each row from its own seed), from weights of version ``step``."""

    def source(idx: list[int], seeds: list[int], step: int, stats: Stats) -> Completions:
        ro = engine.generate([prompts[i] for i in idx], sampling, version=step, seeds=seeds)
        rows = [idx[j] for j in ro.prompt_index]
        return Completions(rows, ro.completions, ro.hit_cap, ro.sample_logprobs, origin=list(ro.prompt_index))

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
        origin = [j for j in range(len(idx)) for _ in range(generations)]
        rows = [idx[j] for j in origin]
        out = corrector(
            [student_prompts[i] for i in rows], [teacher_prompts[i] for i in rows], row_seeds(seeds, generations)
        )
        collect(stats, "acceptance_rate", out.acceptance_rate)
        ro = out.rollout
        return Completions(rows, ro.completions, ro.hit_cap, ro.sample_logprobs, None, out.teacher_logits_BCV, origin)

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
        teacher_at, student_at = _split(list(range(len(idx))), by_teacher)
        collect(stats, "teacher_mix", fraction)
        collect(stats, "teacher_rows", len(teacher_idx) / len(idx))
        if not teacher_idx:
            return student(student_idx, student_seeds, step, stats)
        teacher_part = teacher(teacher_idx, teacher_seeds, step, stats).moved(teacher_at)
        if not student_idx:
            return teacher_part
        return Completions.concat([teacher_part, student(student_idx, student_seeds, step, stats).moved(student_at)])

    return source
