"""SDFT teacher state φ: an EMA, frozen, or live view of the student's weights (LoRA-aware).

    teacher = Teacher(student, mode="ema", ema_rate=0.01)
    logits_BCV = teacher.completion_logits(packed)  # no grad, no dropout; after each step: teacher.update(student)

For a peft LoRA student the teacher copy is a plain model holding the student's *effective* weights
W0 + s·B·A, so the EMA averages the product B·A, never A and B separately (DESIGN §1 step 6).
Letters: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from collections.abc import Callable, Iterator
from typing import get_args

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper
from torch import Tensor

from selfdistill.config import TeacherMode
from selfdistill.training.rollout import Packed, completion_hidden, completion_logits
from selfdistill.training.sharding import copy_full_, full_parameters, local


class Teacher:
    """The network that scores student rollouts with the demonstration in context, and its weights φ."""

    def __init__(self, student: torch.nn.Module, mode: TeacherMode = "ema", ema_rate: float = 0.01):
        if mode not in get_args(TeacherMode):
            raise ValueError(f"mode must be one of {get_args(TeacherMode)}, got {mode!r}")
        if not 0.0 < ema_rate <= 1.0:
            raise ValueError(f"ema_rate must be in (0, 1], got {ema_rate}")
        self.mode: TeacherMode = mode
        self.ema_rate = ema_rate
        self._student = student
        self._shadow: torch.nn.Module | None = None
        # EMA bookkeeping, computed once: shadow tensors and what each tracks (a student tensor or a LoRA layer).
        self._targets: list[Tensor] = []
        self._sources: list[Tensor] = []
        self._lora_targets: list[Tensor] = []
        self._lora_layers: list[LoraLayer] = []
        if mode == "live":
            return
        if isinstance(student, PeftModel):
            _check_lora(student, mode)
        self._shadow = _plain_copy(student, fp32=mode == "ema")
        if mode == "ema":
            self._pair_with_student()

    @property
    def model(self) -> torch.nn.Module:
        """The network to run for teacher logits: the student itself when live."""
        return self._student if self._shadow is None else self._shadow

    def shard(self, shard_fn: Callable[[torch.nn.Module], torch.nn.Module]) -> None:
        """Shard the copy as the student was (FSDP2; after the student, whose parameters it pairs with again): each
        fp32 shard then averages the student's shard of the same slice, on its own rank."""
        if self._shadow is not None:
            shard_fn(self._shadow)
            if self.mode == "ema":
                self._pair_with_student()

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        """φ ← (1−α)·φ + α·θ_effective, in fp32; a no-op for frozen and live teachers. Sharded, it runs on the local
        shards (the same slice of each tensor on both sides), so it needs no communication."""
        if self.mode != "ema":
            return
        if student is not self._student:
            raise ValueError("update() must be given the student the teacher was built from")
        thetas = [local(p).float() for p in self._sources]  # no copy when the student is fp32
        thetas += [effective_weight(layer) for layer in self._lora_layers]
        torch._foreach_lerp_([local(t) for t in self._targets] + self._lora_targets, thetas, self.ema_rate)

    @torch.no_grad()
    def logits(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None
    ) -> Tensor:
        """Teacher logits_BTV for ids_BT (adapters enabled for a live peft student)."""
        with eval_mode(self.model):
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
        return out.logits

    @torch.no_grad()
    def completion_logits(self, packed: Packed) -> Tensor:
        """Teacher logits_BCV for a packed ``[teacher prompt | completion]`` batch, in eval mode (no dropout)."""
        with eval_mode(self.model):
            return completion_logits(self.model, packed)

    @torch.no_grad()
    def completion_hidden(self, packed: Packed) -> Tensor:
        """Teacher hidden states at the completion positions (``completion_hidden``), in eval mode."""
        with eval_mode(self.model):
            return completion_hidden(self.model, packed)

    @property
    def has_state(self) -> bool:
        """Whether there are weights of its own to checkpoint (not when live)."""
        return self._shadow is not None

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow weights under plain-model names (references, as nn.Module.state_dict); {} when live. Sharded:
        a collective, the full tensors on rank 0 and {} on the others."""
        if self._shadow is None:
            return {}
        return full_parameters(self._shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if self._shadow is None:
            if state:
                raise ValueError(f"a live teacher has no state, got {len(state)} tensors")
            return
        params = dict(self._shadow.named_parameters())
        missing, unexpected = params.keys() - state.keys(), state.keys() - params.keys()
        if missing or unexpected:
            raise ValueError(f"teacher state mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name, p in params.items():
            if state[name].shape != p.shape:
                raise ValueError(f"teacher state {name!r}: shape {tuple(state[name].shape)} != {tuple(p.shape)}")
            copy_full_(p, state[name])

    def _pair_with_student(self) -> None:
        """Match every shadow tensor that can change to its source in the student."""
        assert self._shadow is not None
        self._targets, self._sources, self._lora_targets, self._lora_layers = [], [], [], []
        is_peft = isinstance(self._student, PeftModel)
        base = self._student.get_base_model() if is_peft else self._student
        shadow_modules = dict(self._shadow.named_modules())
        shadow_params = dict(self._shadow.named_parameters())
        pairs: list[tuple[Tensor, Tensor]] = []
        covered: set[int] = set()
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer):
                covered.update(id(p) for p in module.parameters())
                self._lora_targets.append(shadow_modules[name].weight)
                self._lora_layers.append(module)
                if getattr(module.get_base_layer(), "bias", None) is not None:  # trainable with bias="all"
                    pairs.append((shadow_modules[name].bias, module.get_base_layer().bias))
            elif isinstance(module, ModulesToSaveWrapper):
                covered.update(id(p) for p in module.parameters())
                if module.active_adapters:
                    trained = module.modules_to_save[module.active_adapters[0]]
                    pairs += [(shadow_modules[name].get_parameter(n), p) for n, p in trained.named_parameters()]
        for name, p in base.named_parameters():
            # Frozen peft base weights never change, so their shadow never moves: skip them.
            if id(p) in covered or (is_peft and not p.requires_grad):
                continue
            if name not in shadow_params:
                raise ValueError(f"teacher='ema' cannot map trainable student parameter {name!r}")
            pairs.append((shadow_params[name], p))
        seen = {id(t) for t in self._lora_targets}
        for target, source in pairs:  # a tied weight (lm_head = embed_tokens) is averaged once
            if id(target) not in seen:
                seen.add(id(target))
                self._targets.append(target)
                self._sources.append(source)


def _plain_copy(student: torch.nn.Module, fp32: bool) -> torch.nn.Module:
    """A non-peft copy of the student's effective weights: requires_grad False, eval mode."""
    clone = copy.deepcopy(student)  # keeps tied parameters tied
    if fp32:
        clone.float()  # before merging, so W0 + s·B·A is summed in fp32
    if isinstance(clone, PeftModel):
        clone = clone.merge_and_unload()
    for p in clone.parameters():
        p.grad = None
    return clone.requires_grad_(False).eval()


def _check_lora(student: PeftModel, mode: TeacherMode) -> None:
    """Refuse LoRA setups whose merged copy would not compute what the student computes."""
    base = student.get_base_model()
    counts = Counter(id(p) for _, p in base.named_parameters(remove_duplicate=False))
    for name, layer in base.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        if counts[id(layer.get_base_layer().weight)] > 1:
            # peft's merge writes the delta into the shared tensor, so it reaches every tied module, while the
            # student applies it in one; with ensure_weight_tying the student cannot even be deep-copied.
            raise ValueError(
                f"teacher={mode!r} cannot copy LoRA on tied weight {name!r}: target other modules, "
                "use modules_to_save for the embedding, or teacher='live'"
            )
        for adapter in layer.active_adapters:
            if mode == "ema" and (getattr(layer, "lora_variant", {}).get(adapter) or layer.lora_bias.get(adapter)):
                raise ValueError(
                    f"teacher='ema' supports plain LoRA only; {name!r} uses a variant (e.g. DoRA) or lora_bias: "
                    "use teacher='frozen' or 'live'"
                )


def effective_weight(layer: LoraLayer) -> Tensor:
    """W0 + Σ s·B·A over the active, unmerged adapters, in fp32 (peft's own delta, fan_in_fan_out aware)."""
    weight = layer.get_base_layer().weight.float()
    if layer.disable_adapters:
        return weight
    for adapter in layer.active_adapters:
        if adapter in layer.scaling and adapter not in layer.merged_adapters:
            weight = weight + layer.get_delta_weight(adapter).float()
    return weight


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run without dropout, then restore each module's own train/eval flag (a live teacher is the student)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
