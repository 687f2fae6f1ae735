"""The rollout-engine seam: what training and evaluation ask of whatever samples completions.

    engine = make_engine("hf", model, tok)
    ro = engine.generate(prompt_ids, Sampling(max_new_tokens=64), version=step)   # a rollout.Rollout
    ...optimizer step...
    engine.sync_weights(model, version=step + 1)

An engine samples from the weights it was last given. ``sync_weights`` hands it the sampling model's current
weights (the student for sdft, the EMA teacher for seqkd) and a version; ``generate`` refuses to sample when the
caller expects a newer version than the engine holds, so stale weights fail loudly instead of skewing a run.

``seeds`` (one per prompt) make sampling a function of the seed, not of the batch: generation j of prompt i draws
from a stream seeded with ``row_seed(seeds[i], j)``. The trainer seeds each row with (run seed, micro-batch,
position in the global batch), so the same run samples the same rollouts at any rank count and after a resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Sampling:
    """How to sample: ``greedy`` ignores temperature and top-p."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    num_generations: int = 1
    greedy: bool = False
    min_new_tokens: int = 0
    """End of turn is not sampled before this many tokens (fixed-length rollouts for benchmarks)."""
    logprobs: bool = True
    """Return each sampled token's log-prob (what TIS weighs); False lets an engine skip the work."""


def seed_for(*parts: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (numpy's SeedSequence hash), the same in every process."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def row_seeds(seeds: Sequence[int], num_generations: int) -> list[int]:
    """One seed per row, prompt-major (prompt i's generations are rows i·n … i·n + n − 1)."""
    return [seed_for(s, j) for s in seeds for j in range(num_generations)]


@dataclass
class Rollout:
    completions: list[list[int]]
    """Sampled token ids per row, up to and including the first EOS (no padding)."""
    prompt_index: list[int]
    """Which input prompt each row came from (rows = prompts × num_generations, grouped by prompt)."""
    sample_logprobs: list[list[float]]
    """Log-probabilities of the sampled tokens under the sampling distribution (temperature applied); empty rows
    when they were not asked for (``logprobs=False``)."""
    hit_cap: list[bool]
    """Rows that reached max_new_tokens without EOS."""


class StaleWeightsError(RuntimeError):
    """An engine asked to sample from weights older than the caller's current step."""


class RolloutEngine(Protocol):
    name: str
    version: int
    """The version of the weights the engine samples from (the optimizer step they came from)."""

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: Sampling,
        version: int | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Rollout:
        """Completions of token-id prompts (cut after the first end-of-turn token), with the sampler's log-probs;
        ``seeds``: one per prompt (None: drawn from torch's global generator)."""
        ...

    def sync_weights(self, model: torch.nn.Module, version: int) -> None:
        """Take ``model``'s current (effective) weights as version ``version``."""
        ...

    def close(self) -> None: ...


def check_version(engine: RolloutEngine, version: int | None) -> None:
    if version is not None and engine.version != version:
        raise StaleWeightsError(
            f"{engine.name} engine holds weights of step {engine.version}, but step {version} is sampling: "
            "sync_weights was not called after the last optimizer step"
        )
