"""The label-free guard: the model's mean per-token log-likelihood on fixed general text, as drift from the base model.

    sample = drift_sample(data_dir)                                   # 32 selection + 32 test passages, fixed
    base = mean_loglik(start_model, tok, sample.selection)            # nats per token, computed once
    guards["drift"] = retained(mean_loglik(model, tok, sample.selection), base)   # 1.0 at the start

Accuracy guards count items, and at 24 items one item moves them by 0.042; a log-likelihood over ~4,000 tokens needs
no labels, moves smoothly and costs one forward pass (PEFT's forgetting metric is this change of loss on a small
general-text sample). The text is LAMBADA's (CC BY 4.0; ``lambada/`` of the data directory): narrative passages of
about a hundred words from novels, far from every skill the project trains, so a falling likelihood there is lost
general language modelling, not a side effect of the new format. Only text, not chat: the one chat-shaped set with
responses (GSM8K's train split) is also a training source, and guarding on training rows would measure learning.
The ``lambada`` task scores last-word accuracy on the same pool; the drift rows are drawn by a seed of their own.

The score is ``retained = exp(loglik_now − loglik_base)``: the geometric-mean probability per token relative to the
start model, 1.0 at step 0, on the same 0–1 scale as accuracy, so its drop 1 − retained enters the budget rule like
any other guard's. A budget of 0.05 lets it lose 0.051 nats a token (perplexity up 5.3%). It is continuous, so its
resolution is 0 (``continual/budget.py``), and it can exceed 1 where training makes the text likelier.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selfdistill.evaluation.guard import GuardError
from selfdistill.evaluation.tasks.base import TaskError, default_data_dir, task_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DRIFT_NAME = "drift"
"""The guard's column name."""
DRIFT_ROWS, DRIFT_TOKENS, DRIFT_SEED = 32, 128, "drift"
"""Passages per part (selection and test each), tokens kept per passage, and the seed of the draw."""
LAMBADA_FILE = "lambada_openai_sub2000.jsonl"


@dataclass(frozen=True)
class DriftSample:
    """Fixed passages of general text: a selection part scored during training and a disjoint test part."""

    selection: tuple[str, ...]
    """Passages scored at every evaluation point."""
    test: tuple[str, ...]
    """Other passages, scored once on the kept model."""
    source: str
    """The file the passages came from."""
    name: str = DRIFT_NAME
    """Guard column name."""

    @property
    def n(self) -> int:
        """Passages scored at each evaluation point."""
        return len(self.selection)

    @property
    def resolution(self) -> float:
        """A continuous score: no item granularity."""
        return 0.0


def drift_sample(data_dir: Path | None = None, rows: int = DRIFT_ROWS) -> DriftSample:
    """``rows`` selection and ``rows`` test passages drawn without repeats from LAMBADA, the same on every call."""
    try:
        path = task_dir(Path(data_dir) if data_dir is not None else default_data_dir(), "lambada") / LAMBADA_FILE
    except TaskError as err:
        raise GuardError(f"drift guard: {err}; or --no-drift to go without it") from None
    if not path.is_file():
        raise GuardError(f"drift guard: {path}: file not found (--no-drift goes without it)")
    passages = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                passages.append(f"{row['context']} {row['continuation']}")
            except (json.JSONDecodeError, KeyError, TypeError):
                raise GuardError(f"drift guard: {path}:{n}: not a LAMBADA row with context and continuation") from None
    if len(passages) < 2 * rows:
        raise GuardError(f"drift guard: {path}: {len(passages)} passages, fewer than the {2 * rows} it draws")
    drawn = random.Random(DRIFT_SEED).sample(range(len(passages)), 2 * rows)
    return DriftSample(tuple(passages[i] for i in drawn[:rows]), tuple(passages[i] for i in drawn[rows:]), str(path))


def retained(loglik_now: float, loglik_base: float) -> float:
    """exp(now − base): the per-token probability kept relative to the base model (1.0 = unchanged)."""
    return math.exp(loglik_now - loglik_base)


def mean_loglik(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_tokens: int = DRIFT_TOKENS,
    batch_size: int = 4,
) -> float:
    """Mean log-probability per token (nats) of ``texts``, pooled over all their tokens.

    Each text is cut to its first ``max_tokens`` tokens and follows BOS (EOS where the tokenizer has none), so every
    kept token is scored, as ``evaluate.encode_pair`` conditions an empty context. Raw text, no chat template. Eval
    mode and no autograd; the caller's train/eval mode is restored. ``batch_size`` bounds the ``[B, T, V]`` fp32
    log-softmax (4 × 129 × 49,152 floats ≈ 100 MB at SmolLM2's vocabulary).
    """
    import torch  # here, so resolving a run's guards (drift_sample) does not import torch

    if batch_size < 1 or max_tokens < 1 or not texts:
        raise ValueError(f"mean_loglik: batch_size and max_tokens must be >= 1 and texts non-empty ({len(texts)})")
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    rows = [[prefix, *tok.encode(text, add_special_tokens=False)[:max_tokens]] for text in texts]
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                width = max(len(r) for r in batch)
                ids_BT = torch.tensor([r + [prefix] * (width - len(r)) for r in batch], device=device)
                mask_BT = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch], device=device)
                logits_BTV = model(input_ids=ids_BT, attention_mask=mask_BT).logits[:, :-1]
                logp_BT = logits_BTV.float().log_softmax(-1).gather(-1, ids_BT[:, 1:, None]).squeeze(-1)
                keep_BT = mask_BT[:, 1:].bool()  # right padding: a real token's context is all real tokens
                total += float(logp_BT[keep_BT].double().sum())
                count += int(keep_BT.sum())
    finally:
        model.train(was_training)
    return total / count
