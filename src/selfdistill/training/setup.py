"""Setup pieces of the training loop kept out of train.py: data source, output dir, device, precision, LoRA, saving.

examples = load_training_examples(cfg.data, cfg.source); prepare_output(cfg.run, config)
model = wrap_lora(model, cfg.adapter, cfg.model)
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from selfdistill.cards import DATA_INFO, ENVIRONMENT, SCORES, render_card, write_data_info
from selfdistill.data import DataError, Example, is_hub_name, parse_columns, read_examples
from selfdistill.errors import UserError
from selfdistill.fileio import write_text_atomic
from selfdistill.models import load_model

if TYPE_CHECKING:
    from selfdistill.config import AdapterConfig, RunConfig, SourceConfig, TrainConfig

log = logging.getLogger(__name__)


class OutputDirError(UserError):
    """An output directory that would be overwritten, or a resume of something that is not a training run."""


def load_training_examples(data: str, source: SourceConfig | None = None) -> list[Example]:
    """Examples from a JSONL file / HF dataset dir, or the train split of a registered task."""
    assert isinstance(data, str) and source is not None
    columns = parse_columns(source.columns)
    if Path(data).exists() or is_hub_name(data):
        return read_examples(data, columns=columns)
    from selfdistill.evaluation.tasks import TASKS, get_task

    if data in TASKS:
        task = get_task(data, source.data_dir)
        examples = task.train_examples() if task.kind == "generate" else []
        if not examples:
            raise DataError(f"task {data!r} has no training split with demonstrations")
        return examples
    raise DataError(f"{data}: no such file, dataset directory or task")


_OWN_OUTPUTS = ("metrics.jsonl", "checkpoints", "merged", SCORES, DATA_INFO, ENVIRONMENT)
_OWN_OUTPUTS += ("selection.json", "selection", "frontier.png")  # evaluation during training (training/selection.py)
TRAIN_CONFIG = "train_config.json"
"""The resolved training config. It is also config.json until the run ends, when the saved model's HF config
takes that name and carries the training config under the key ``selfdistill``."""


def prepare_output(run: RunConfig | TrainConfig, config: dict) -> None:
    """Create the output dir and write config.json; refuse to clobber a non-empty dir without --overwrite.

    With --resume, a missing or empty output dir starts a new run: a run killed before it wrote anything is
    continued by the same command, and `--resume` can always be passed when rerunning after a crash.
    """
    out = run.output
    # (a hidden .tmp file is what a kill during the very first write leaves; it does not make a run)
    if run.resume and not (out.is_dir() and any(not p.name.endswith(".tmp") for p in out.iterdir())):
        log.info("%s: nothing to resume yet; starting a new run", out)
    elif run.resume:
        if not (out / TRAIN_CONFIG).is_file():
            raise OutputDirError(f"{out}: not a training run (no {TRAIN_CONFIG}); nothing to resume there")
        try:
            saved = json.loads((out / TRAIN_CONFIG).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise OutputDirError(f"{out / TRAIN_CONFIG}: unreadable ({err}); cannot resume") from None
        ignore = ("resume", "overwrite", "progress")
        changed = sorted(k for k in saved if k not in ignore and saved[k] != config.get(k))
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(changed))
    elif out.exists() and any(out.iterdir()):
        if not run.overwrite:
            raise OutputDirError(f"{out}: output directory exists and is not empty (use --overwrite or --resume)")
        for name in _OWN_OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2) + "\n"
    # atomic: a kill mid-write must not leave a torn file that a later --resume cannot parse
    write_text_atomic(out / TRAIN_CONFIG, text)
    if not (run.resume and (out / "config.json").is_file()):
        write_text_atomic(out / "config.json", text)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX")
    return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether compute runs in bf16 (autocast): asked for, or ``auto`` on hardware with native bf16."""
    return precision == "bf16" or (precision == "auto" and bf16_supported(device))


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast over fp32 master weights (pure-bf16 weights barely move at small learning rates)."""
    if not uses_bf16(precision, device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def load_student(cfg: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The model to train (LoRA-wrapped with --lora) in train mode, and its tokenizer."""
    model, tok = load_model(cfg.model, device=device, trust_remote_code=cfg.source.trust_remote_code)
    if cfg.compute.gradient_checkpointing:  # transformers 5.24 renamed it; older releases have only the first name
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.adapter.lora:
        model = wrap_lora(model, cfg.adapter, cfg.model)
    model.train()
    return model, tok


def wrap_lora(
    model: torch.nn.Module, adapter: AdapterConfig | TrainConfig, base_model: str | None = None
) -> torch.nn.Module:
    """``model`` with a LoRA adapter (peft) on its ``adapter.lora_target_modules``; ``base_model`` is the spec it
    was loaded from, recorded so that the output directory finds its base again."""
    from peft import LoraConfig, get_peft_model

    targets = adapter.lora_target_modules
    lora_config = LoraConfig(
        r=adapter.lora_r,
        lora_alpha=adapter.lora_alpha,
        lora_dropout=adapter.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)
    # Record the spec we loaded from, so `load_model(OUTPUT)` can find the base again (e.g. the embedded model).
    model.peft_config["default"].base_model_name_or_path = base_model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d on %s: %.2f M trainable parameters", adapter.lora_r, targets, trainable / 1e6)
    return model


def save_final(
    model: torch.nn.Module,
    tok,
    out: Path | TrainConfig,
    config: dict,
    rows: int,
    merge: bool = False,
    weights: dict | None = None,
) -> None:
    """HF format into ``out``: the full model, or the LoRA adapter (plus OUTPUT/merged with ``merge``), each with
    its card. ``config``: the run's config_dict; ``rows``: examples trained on; ``weights``: a sharded model's full
    weights, gathered to this rank (--fsdp)."""
    if weights is not None:
        from selfdistill.training.sharding import unsharded

        model = unsharded(model, weights)
    write_data_info(out, config["data"], rows)
    model.config.selfdistill = config  # unknown keys round-trip through HF configs
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if merge:
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(out / "merged")
        tok.save_pretrained(out / "merged")
        render_card(out / "merged", merged=True)
    render_card(out)
