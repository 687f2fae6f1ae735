"""The Hugging Face engine: ``model.generate`` on the training model itself (today's sampler, rollout.sample).

It holds a reference to the model that samples, so the weights are always current; ``sync_weights`` only
records the version (and refuses a different model, which would mean the caller synced the wrong one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from selfdistill.training.engines.base import Rollout, Sampling, check_version
from selfdistill.training.rollout import sample


class HFEngine:
    name = "hf"

    def __init__(
        self,
        model: torch.nn.Module,
        tok,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        prepack: str = "auto",
    ) -> None:
        self.model = model
        self.tok = tok
        self.version = 0
        self._autocast = autocast  # the training precision: bf16 autocast where the trainer runs it
        self._prepack = prepack

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: Sampling,
        version: int | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Rollout:
        check_version(self, version)
        with self._autocast():
            return sample(
                self.model,
                self.tok,
                prompts,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_new_tokens=sampling.max_new_tokens,
                num_generations=sampling.num_generations,
                do_sample=not sampling.greedy,
                min_new_tokens=sampling.min_new_tokens,
                logprobs=sampling.logprobs,
                seeds=seeds,
                prepack=self._prepack,
            )

    def sync_weights(self, model: torch.nn.Module, version: int) -> None:
        if model is not self.model:
            raise ValueError(f"the {self.name} engine samples from the model it was built on; sync_weights got another")
        self.version = version

    def close(self) -> None:
        pass
