"""A model's weights as an HF checkpoint would name them, one tensor at a time: what an engine loads.

    for name, tensor in hf_weights(model): ...      # "model.layers.0.self_attn.q_proj.weight", ...

A peft LoRA model yields its *effective* weights W0 + s·B·A under the base names (adapters are never merged into
the training model, so nothing is undone afterwards); ``modules_to_save`` copies replace their originals. A tied
LM head is left out unless ``tied_head``: a checkpoint does not store it twice, but a reload into vLLM must
name it, or the head's packed copy (vLLM on CPU) is never rebuilt from the new embedding.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


@torch.no_grad()
def hf_weights(
    model: torch.nn.Module, dtype: torch.dtype | None = None, tied_head: bool = False
) -> Iterator[tuple[str, Tensor]]:
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from selfdistill.training.teacher import effective_weight

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    tied = bool(getattr(base.config, "tie_word_embeddings", False))
    lora = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, tensor in base.state_dict().items():
        if "lora_" in name or ".original_module." in name:
            continue
        name = name.replace(".modules_to_save.default.", ".")
        if ".base_layer." in name:
            owner, _, leaf = name.partition(".base_layer.")
            name = f"{owner}.{leaf}"
            if leaf == "weight" and owner in lora:
                tensor = effective_weight(lora[owner])
        if tied and name == "lm_head.weight" and not tied_head:
            continue
        yield name, tensor.to(dtype) if dtype is not None else tensor
