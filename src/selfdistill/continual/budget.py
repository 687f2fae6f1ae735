"""The forgetting budget: which evaluated point of a run is kept, and when training stops. Pure; no torch.

    kept = choose(points, base, budget=0.05)     # the best selection score among the points within the budget

A run is evaluated every N optimizer steps (and at step 0); each :class:`EvalPoint` holds the score on the task being
learned (its *selection* split) and the score of every *guard* task (what must not be lost). A guard's *drop* is its
reference score minus its score now (positive = lost).

**The rule** (:func:`within_budget`), for a budget D and a guard set G:

1. the mean over G of max(drop, 0) is at most D, and
2. no single guard drops by more than max(D, 1/n), n being its item count (1/n: one item; 0 for continuous scores).

Clause 1 is the promise itself: on average at most D of what the model could do is lost. Gains are counted as 0, so
an improvement on one guard cannot pay for a loss on another. Clause 2 stops an average over many guards from hiding
one guard that was wiped out (near_record_json went 0.92 → 0.21 in three SFT steps while prior_probe held at 0.88):
without it, ten guards would let one lose 0.5. Its bound is D, but never less than one item, because a guard with
fewer than 1/D items cannot resolve D: at 16 items one flipped item is 0.0625, and forbidding it would stop runs on
noise alone. At 24 items (0.042 an item) and D = 0.05 a guard may lose one item and not two. A continuous guard (the
label-free log-likelihood drift, ``drift.py``) has resolution 0 and gets the plain bound D.

**Always satisfiable**: the start model (step 0) has drop 0 on every guard; :func:`choose` admits it even where a
re-evaluation differs by a rounding, so a run always has a point to keep. Ties on the selection score go to the earlier
step (less training, same measured skill).

**In a continual plan** the budget is *cumulative from the start model*, not renewed per stage: every guard the start
model was measured on (prior, near-prior, drift, ``--keep`` tasks) keeps the start model's score as its reference in
every stage. "Cannot afford to lose" is about the total: a per-stage budget would let S stages lose S·D, and the seed's
"Task A: 90% → 88% → 86%" is exactly the slow leak a per-stage budget permits. An earlier stage's skill joins the guard
set with its score *when its own stage ended* (its kept point's selection score) as the reference, since the start
model could not do it (against the start model every later score would count as a gain). Each stage thus starts
within budget (its start is the previous stage's kept model, scored on the same items with greedy decoding) and can
only spend what is left: a stage that inherits 0.04 of a 0.05 budget has 0.01 to spend.

:class:`Patience` stops training once k points in a row broke the budget or did not improve the best selection score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from selfdistill.errors import UserError

EPS = 1e-9
"""Slack on every comparison: scores are means of 0/1 items, and 0.9583 - 0.9167 must equal 1/24, not exceed it."""


class BudgetError(UserError):
    """A forgetting budget or patience that cannot be used; the message names the option."""


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation during training."""

    step: int
    """Optimizer steps done when it was evaluated (0: the start model)."""
    selection: float
    """Score of the task being learned on its selection split (never its test split)."""
    guards: Mapping[str, float] = field(default_factory=dict)
    """Guard task name → its score on the guard's selection items."""


@dataclass(frozen=True)
class GuardBase:
    """A guard's reference: what its drop is measured from."""

    score: float
    """The start model's score, or for an earlier stage's skill its score when its own stage ended."""
    resolution: float = 0.0
    """What one item is worth (1/n); 0 for a continuous score."""


@dataclass(frozen=True)
class Assessment:
    """A point measured against the budget: what :func:`within_budget` decided and why (for logs and results)."""

    step: int
    """The point's step."""
    drops: dict[str, float]
    """Guard name → reference minus now (positive = lost)."""
    mean_drop: float
    """Mean over the guards of max(drop, 0)."""
    worst: str
    """The guard with the largest drop."""
    within: bool
    """Whether both clauses of the rule hold."""


def check_budget(budget: float, option: str = "--forgetting-budget") -> float:
    """``budget`` if it is in [0, 1); a one-line BudgetError naming ``option`` otherwise."""
    if not (isinstance(budget, int | float) and 0 <= budget < 1):
        raise BudgetError(f"{option}: must be in [0, 1) (a drop in score, 0.05 = five points), got {budget!r}")
    return float(budget)


def baseline(
    start: Mapping[str, float], resolution: Mapping[str, float], stage_ends: Mapping[str, float] | None = None
) -> dict[str, GuardBase]:
    """The references of a guard set: the start model's scores, and for earlier stages' skills their stage-end scores
    (``stage_ends`` wins where both name a task). ``resolution``: guard → 1/n (absent: 0, a continuous score)."""
    refs = {**start, **(stage_ends or {})}
    return {name: GuardBase(float(score), float(resolution.get(name, 0.0))) for name, score in refs.items()}


def drops(point: EvalPoint, base: Mapping[str, GuardBase]) -> dict[str, float]:
    """Guard name → reference score minus the point's score, for every guard of ``base``."""
    if not base:
        raise BudgetError(
            "--forgetting-budget: needs at least one guard task (--keep TASK, or a skill with near tasks)"
        )
    missing = [name for name in base if name not in point.guards]
    if missing:
        raise ValueError(f"step {point.step}: no score for guard task(s) {', '.join(missing)}")
    return {name: ref.score - float(point.guards[name]) for name, ref in base.items()}


def assess(point: EvalPoint, base: Mapping[str, GuardBase], budget: float) -> Assessment:
    """The point's drops and whether it is within ``budget`` under the module's rule."""
    lost = drops(point, base)
    mean = math.fsum(max(d, 0.0) for d in lost.values()) / len(lost)
    worst = max(lost, key=lambda name: lost[name])
    each_ok = all(d <= max(budget, base[name].resolution) + EPS for name, d in lost.items())
    return Assessment(point.step, lost, mean, worst, mean <= budget + EPS and each_ok)


def within_budget(point: EvalPoint, base: Mapping[str, GuardBase], budget: float) -> bool:
    """Whether the point lost at most ``budget``: mean clipped drop ≤ D and every guard's drop ≤ max(D, 1/n)."""
    return assess(point, base, budget).within


def choose(points: Sequence[EvalPoint], base: Mapping[str, GuardBase], budget: float) -> EvalPoint:
    """The point to keep: the best selection score among the points within budget, the earliest on ties.

    The step-0 point (the start model) always qualifies. ``points`` need not be sorted; it must hold step 0.
    """
    ordered = sorted(points, key=lambda p: p.step)
    if not ordered or ordered[0].step != 0:
        raise ValueError("choose: the points must include step 0 (the start model), which always qualifies")
    kept = ordered[0]
    for point in ordered[1:]:
        if point.selection > kept.selection + EPS and within_budget(point, base, budget):
            kept = point
    return kept


@dataclass
class Patience:
    """Stop once ``k`` points in a row broke the budget or did not beat the best selection score so far.

    Feed it every point in step order, step 0 first (it sets the best and is never a strike); on resume, feed it the
    recorded points again. ``update`` returns whether to stop now.
    """

    k: int
    """Strikes in a row that stop training (>= 1)."""
    budget: float
    """The forgetting budget D the points are held to."""
    best: float = -math.inf
    """Best selection score among the points within budget so far."""
    strikes: int = 0
    """Points in a row that broke the budget or did not improve ``best``."""

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int) and self.k >= 1):
            raise BudgetError(f"--patience: must be an integer >= 1, got {self.k!r}")
        check_budget(self.budget)

    def update(self, point: EvalPoint, base: Mapping[str, GuardBase]) -> bool:
        """Count ``point``; True once ``k`` points in a row were strikes."""
        first = self.best == -math.inf
        if first or (point.selection > self.best + EPS and within_budget(point, base, self.budget)):
            self.best, self.strikes = point.selection, 0
        else:
            self.strikes += 1
        return self.strikes >= self.k
