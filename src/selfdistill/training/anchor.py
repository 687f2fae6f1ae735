"""Replay anchor (learning without forgetting): on prompts that are not the task's, pull the student toward the model
it started from.

    prompts = load_anchor(cfg.replay.anchor, cfg.source.data_dir, examples)  # DataError: empty, bad, overlapping
    reference = anchor_reference(model, teacher)                      # before a checkpoint is loaded into the model
    ref_logits_ACV = reference(packed)                                # [anchor prompt | student sample], no grad
    ref_hidden_ACH = reference.hidden(packed)                         # what its LM head reads (reference.model's)

Every step the student also samples a completion for a batch of anchor prompts, and the loss gains
``anchor_weight · KL(start model ‖ student)`` on those tokens (full vocabulary, forward, like the SDFT term).

The reference is the model at the start of the run (a continual stage: the model that stage starts from), frozen.
Not the EMA teacher: it moves toward the student by ``ema_rate`` every step, so over a long run it follows the
student away from what is to be kept. The frozen copy costs one more set of weights, except where the start model
is already there: a frozen teacher (its weights), or LoRA (the base model with the adapters switched off).
Letters: A anchor rows, C completion tokens, V vocabulary.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from torch import Tensor

from selfdistill.data import DataError, Example, is_hub_name, read_examples
from selfdistill.training.rollout import Packed, completion_hidden, completion_logits
from selfdistill.training.teacher import Teacher, eval_mode


def load_anchor(spec: str, data_dir: Path | None, training: list[Example]) -> list[Example]:
    """The anchor prompts: a JSONL file or dataset (prompts only; completions ignored), an anchor pool, or a
    registered task's training prompts. None may be a training prompt."""
    from selfdistill.evaluation.tasks import TASKS, get_task
    from selfdistill.evaluation.tasks.anchors import ANCHOR_POOLS

    if Path(spec).exists() or is_hub_name(spec):
        examples = read_examples(spec, require_completion=False)
    elif spec in ANCHOR_POOLS:
        examples = ANCHOR_POOLS[spec]()
    elif spec in TASKS:
        task = get_task(spec, data_dir)
        examples = task.train_examples() if task.kind == "generate" else []
        if not examples:
            raise DataError(
                f"anchor: task {spec!r} has no training prompts (choose a generation task with a train "
                f"split, an anchor pool ({', '.join(ANCHOR_POOLS)}), or a JSONL file)"
            )
    else:
        raise DataError(f"anchor: {spec}: no such file, dataset, anchor pool ({', '.join(ANCHOR_POOLS)}) or task")
    seen = {_key(ex): ex.source for ex in training}
    for ex in examples:
        if _key(ex) in seen:
            raise DataError(
                f"anchor: {ex.source}: prompt is also a training prompt ({seen[_key(ex)]}); an anchor "
                "must hold prompts other than the task's"
            )
    return examples


def _key(example: Example) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], " ".join(m["content"].split())) for m in example.messages)


@dataclass(frozen=True)
class AnchorReference:
    """The start model, frozen: ``ref(packed)`` is its completion logits, ``ref.hidden(packed)`` the hidden states
    its head (``output_head(ref.model)``) reads; both without grad and in eval mode."""

    model: torch.nn.Module
    adapters_off: bool = False
    """A peft student whose base, with the adapters switched off, is the start model."""

    @torch.no_grad()
    def __call__(self, packed: Packed) -> Tensor:
        with self._as_start():
            return completion_logits(self.model, packed)

    @torch.no_grad()
    def hidden(self, packed: Packed) -> Tensor:
        with self._as_start():
            return completion_hidden(self.model, packed)

    @contextlib.contextmanager
    def _as_start(self) -> Iterator[None]:
        with self.model.disable_adapter() if self.adapters_off else contextlib.nullcontext(), eval_mode(self.model):
            yield


def anchor_reference(
    model: torch.nn.Module, teacher: Teacher, shard_fn: Callable[[torch.nn.Module], torch.nn.Module] | None = None
) -> AnchorReference:
    """The start model, frozen. Call it before a checkpoint is loaded into ``model`` (a copy made after a resume
    would be of the trained weights), and before the model is sharded; ``shard_fn`` shards a copy of its own as the
    student will be (FSDP2)."""
    if teacher.mode == "frozen":
        return AnchorReference(teacher.model)
    if isinstance(model, PeftModel):  # adapters off: the base, which is where a LoRA run starts from
        return AnchorReference(model, adapters_off=True)
    reference = Teacher(model, "frozen")
    if shard_fn is not None:
        reference.shard(shard_fn)
    return AnchorReference(reference.model)
