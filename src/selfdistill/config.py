"""What a training run is told: ``TrainConfig``, made of one small dataclass per concern, and the choices it takes.

    cfg = TrainConfig.from_mapping({"data": "demos.jsonl", "lr": 1e-4, "sampling": {"temperature": 0.7}})
    cfg.optim.lr, cfg.sampling.temperature                 # bad values raise ConfigError("--lr: must be > 0")

Every field name is unique across the groups, so a field is one flag (``--temperature``), one plan or ``--config``
key (``temperature``, or nested as ``sampling: {temperature: ...}``) and one key of ``config.json``, which is flat.
Each group checks its own fields in ``__post_init__``; ``TrainConfig`` checks what spans groups. Standard library
only (plus the template check in ``prompts``, which needs no model code), so ``--help`` never imports torch.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from selfdistill import DEFAULT_MODEL
from selfdistill.config_mapping import ConfigError as ConfigError  # raised here, caught by the loop and the CLI
from selfdistill.config_mapping import bad, build, flat_values, groups, option_types
from selfdistill.data import parse_columns
from selfdistill.training.prompts import resolve_template

Method = Literal["sdft", "sft", "seqkd"]
Precision = Literal["auto", "fp32", "bf16"]
TeacherMode = Literal["ema", "frozen", "live"]
Divergence = Literal["forward", "reverse", "jsd"]
Support = Literal["full", "topk", "sampled"]
RolloutName = Literal["hf", "vllm", "decode"]
TISChoice = Literal["auto", "none", "sequence", "prefix"]
PrepackChoice = Literal["auto", "on", "off"]
TrackerName = Literal["tensorboard", "trackio", "wandb"]
Correction = Literal["none", "topk"]
LossTemperature = Literal["none", "rollout"]


@dataclass
class SourceConfig:
    """Where the data and the model are read from."""

    data_dir: Path | None = None
    """Where registered task data lives (default: $SELFDISTILL_DATA or ../shared/data)."""
    columns: str | None = None
    """Where the fields are in data whose columns are named otherwise: prompt=question,completion=answer."""
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir) if self.data_dir is not None else None
        parse_columns(self.columns)


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay, over fp32 master weights."""

    lr: float = 1e-5
    """Peak learning rate (AdamW)."""
    max_steps: int | None = None
    """Optimizer steps; default: enough for --epochs over the data."""
    epochs: float = 1.0
    """Passes over the data when --max-steps is not given."""
    batch_size: int = 8
    """Prompts per micro-batch, over all processes under torchrun (each sampled --num-generations times)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    warmup_ratio: float = 0.1
    """Fraction of steps of linear warmup before the cosine decay."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""

    def __post_init__(self) -> None:
        bad("lr", self.lr > 0, "must be > 0")
        bad("max_steps", self.max_steps is None or self.max_steps > 0, "must be > 0")
        bad("epochs", self.epochs > 0, "must be > 0")
        bad("batch_size", self.batch_size > 0, "must be > 0")
        bad("grad_accum", self.grad_accum > 0, "must be > 0")
        bad("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)")
        bad("weight_decay", self.weight_decay >= 0, "must be >= 0")
        bad("max_grad_norm", self.max_grad_norm > 0, "must be > 0")


@dataclass
class ComputeConfig:
    """Where and how the arithmetic runs."""

    precision: Precision = "auto"
    """Compute precision: bf16 autocast over fp32 master weights where supported (auto), or plain fp32."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ... (auto: cuda when available)."""
    # One FSDP2 unit per decoder layer, fp32 shards: for models whose training state does not fit on one device.
    fsdp: bool = False
    """Under torchrun: shard the student and its teacher over the processes instead of a copy on each (FSDP2)."""
    # transformers' gradient checkpointing, non-reentrant: less memory per completion token, one more student forward.
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them."""


@dataclass
class SamplingConfig:
    """How the student's rollouts (and seqkd's teacher generations) are sampled."""

    temperature: float = 1.0
    """Sampling temperature of rollouts."""
    top_p: float = 1.0
    num_generations: int = 1
    """Samples per prompt."""
    max_new_tokens: int = 128
    """Longest sampled completion."""
    min_new_tokens: int = 0
    """Sampled completions do not end before this many tokens (fixed-length rollouts, for benchmarks)."""
    generation_batch_size: int | None = None
    """Prompts sampled in one generation, at most (default: all of an optimizer step's, batch size x grad accum,
    so every weight is read once per step); whole micro-batches only. Lower it to cap the rollout's memory."""

    def __post_init__(self) -> None:
        bad("temperature", self.temperature > 0, "must be > 0")
        bad("top_p", 0 < self.top_p <= 1, "must be in (0, 1]")
        bad("num_generations", self.num_generations > 0, "must be > 0")
        bad("max_new_tokens", self.max_new_tokens > 0, "must be > 0")
        bad("min_new_tokens", 0 <= self.min_new_tokens <= self.max_new_tokens, "must be in [0, max-new-tokens]")
        cap = self.generation_batch_size
        bad("generation_batch_size", cap is None or cap > 0, "must be > 0")


@dataclass
class TeacherConfig:
    """The teacher: its weights, its prompt (the demonstration in context), and what it samples itself."""

    teacher: TeacherMode = "ema"
    """Teacher weights: EMA of the student, frozen at the start of this run, or the student itself."""
    ema_rate: float = 0.01
    """EMA rate α: φ ← (1−α)·φ + α·θ after every optimizer step."""
    teacher_template: str = "paper"
    """Teacher prompt template: paper, chat-turn, or a format string with {prompt} and {demonstration}."""
    teacher_temperature: float = 1.0
    """SDFT's target is softmax(teacher logits / τ): τ < 1 sharpens it toward the teacher's mode (1: the paper)."""
    max_teacher_prompt_tokens: int = 2048
    """Teacher prompt budget; the demonstration (never the question) is cut to fit."""
    truncate_demonstration: bool = True
    """Cut over-long demonstrations (counted in the logs); with --no-truncate-demonstration, fail instead."""
    teacher_mix: float = 0.0
    """sdft warm start: this fraction of rollouts is sampled by the teacher with the demonstration in context."""
    teacher_mix_until: float | None = None
    """With --teacher-mix: the fraction falls linearly to 0 at this fraction of the steps (default: constant)."""
    seqkd_filter: bool = False
    """seqkd: keep a teacher generation only when the task's scorer accepts it."""

    def __post_init__(self) -> None:
        bad("ema_rate", 0 < self.ema_rate <= 1, "must be in (0, 1]")
        bad("teacher_temperature", self.teacher_temperature > 0, "must be > 0")
        bad("max_teacher_prompt_tokens", self.max_teacher_prompt_tokens > 0, "must be > 0")
        bad("teacher_mix", 0 <= self.teacher_mix <= 1, "must be in [0, 1]")
        until = self.teacher_mix_until
        bad("teacher_mix_until", until is None or 0 < until <= 1, "must be in (0, 1]")
        bad("teacher_mix_until", until is None or self.teacher_mix > 0, "needs --teacher-mix")
        resolve_template(self.teacher_template)


@dataclass
class LossConfig:
    """The per-token divergence between teacher and student, and how it is computed."""

    divergence: Divergence = "forward"
    """Per-token divergence: forward KL(teacher‖student) (what the paper ran), reverse, or JSD."""
    jsd_beta: float = 0.5
    support: Support = "full"
    """Vocabulary support of the divergence: full, the teacher's top-k plus a tail bucket, or the sampled token."""
    topk: int = 20
    skip_first_tokens: int = 3
    """Completion tokens excluded from the SDFT loss at the start (teacher artifacts)."""
    # Per row where the logits are materialized; positions of the whole batch where the LM head runs inside the loss.
    loss_chunk_size: int = 64
    """Completion tokens per chunk when computing the divergence (bounds memory)."""
    # No [batch, completion, vocabulary] logits exist: memory stays flat in the vocabulary. Used for the default SDFT
    # loss (forward KL, full support) where it is exact (a plain linear head, checked on the first example) and nothing
    # else needs the logits (no TIS, corrected rollouts or --fsdp; the anchor's term runs the same way).
    fused_head: bool = True
    """Run the LM heads inside the loss chunk by chunk, from hidden states; --no-fused-head materializes logits."""
    # The SDFT authors' code divides both logits by the rollout temperature T in the loss; at T = 1 the two agree.
    loss_temperature: LossTemperature = "none"
    """sdft at --temperature T != 1: none (default, the loss on untempered logits) or rollout (both logits / T)."""

    def __post_init__(self) -> None:
        bad("jsd_beta", 0 <= self.jsd_beta <= 1, "must be in [0, 1]")
        bad("topk", self.topk > 0, "must be > 0")
        bad("skip_first_tokens", self.skip_first_tokens >= 0, "must be >= 0")
        bad("loss_chunk_size", self.loss_chunk_size > 0, "must be > 0")
        bad(
            "divergence",
            not (self.divergence == "jsd" and self.support == "topk"),
            "jsd is not supported with --support topk",
        )


@dataclass
class EngineConfig:
    """Who samples the rollouts and how: the trainer's own model (hf) or a vLLM engine, with its corrections."""

    rollout: RolloutName = "hf"
    """Rollout engine: hf (model.generate) or vllm (in-process, given the weights after every step)."""
    tis: TISChoice = "auto"
    """Truncated importance sampling of engine rollouts: prefix, sequence, none (auto: prefix with vllm, else none)."""
    tis_cap: float = 2.0
    """Largest importance weight."""
    # auto: bf16 only (oneDNN; the same results as the stock kernels). on: fp32 as well (MKL's packed sgemm: faster,
    # but it rounds differently in the last bits and holds a packed copy of the weights while it samples, +0.7 GB
    # peak on the embedded model). off: the stock kernels.
    prepack: PrepackChoice = "auto"
    """CPU hf rollouts: matmul weights packed once per rollout, not at every decode step (auto: in bf16 only)."""
    rollout_correction: Correction = "none"
    """sdft: topk replaces each student token outside the teacher's top --correction-k by a teacher sample."""
    correction_k: int = 20

    def __post_init__(self) -> None:
        bad("tis_cap", self.tis_cap > 0, "must be > 0")
        why = "means nothing with --rollout hf (the sampler is the trainer's own model); use --rollout vllm"
        bad("tis", self.rollout != "hf" or self.tis in ("auto", "none"), why)
        bad("correction_k", self.correction_k >= 1, "must be >= 1")
        why = "needs --rollout hf (the teacher checks each token as it is drawn, which a vLLM engine cannot do)"
        bad("rollout_correction", self.rollout_correction == "none" or self.rollout == "hf", why)


@dataclass
class AnchorConfig:
    """The replay anchor: prompts on which the student is also pulled toward the model it started from."""

    # The student is also pulled toward the model it started from on these prompts (no demonstrations needed).
    anchor: str | None = None
    """Replay anchor prompts: a JSONL file, a dataset, a registered task's train prompts, or a pool (general_chat)."""
    anchor_weight: float = 1.0
    """W in loss + W · KL(start model ‖ student) on the student's samples for the anchor prompts."""
    anchor_batch_size: int | None = None
    """Anchor prompts per micro-batch (default: --batch-size)."""

    def __post_init__(self) -> None:
        bad("anchor_weight", self.anchor_weight > 0, "must be > 0")
        bad("anchor_batch_size", self.anchor_batch_size is None or self.anchor_batch_size > 0, "must be > 0")


@dataclass
class AdapterConfig:
    """A LoRA adapter (peft) trained instead of all weights."""

    lora: bool = False
    """Train a LoRA adapter (peft) instead of all weights."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    merge: bool = False
    """With --lora, also write the merged model to OUTPUT/merged."""

    def __post_init__(self) -> None:
        bad("lora_r", self.lora_r > 0, "must be > 0")
        bad("merge", self.lora or not self.merge, "needs --lora")


@dataclass
class EvaluationConfig:
    """Evaluation during training: the selection split, the guards, the forgetting budget and early stopping."""

    eval_every: int | None = None
    """Score the selection split and the guard tasks every N optimizer steps (and at step 0 and the last step)."""
    forgetting_budget: float | None = None
    """Save the evaluated step with the best selection score whose guard drop is at most D (0.05 = five points)."""
    patience: int | None = None
    """Stop once K evaluations in a row broke the budget or did not improve the best score (needs a budget)."""
    keep: list[str] = field(default_factory=list)
    """Also guard these: a task, a suite (prior) or FILE.jsonl[:scorer]; the prior quick suite always guards."""
    selection: str | None = None
    """Selection items, FILE.jsonl[:scorer] (default: the task's validation split, or 10% of the user rows)."""
    drift: bool = True
    """Guard the mean log-likelihood of fixed general text (label-free; --no-drift leaves it out)."""
    eval_limit: int = 24
    """At most this many items of each task at every evaluation point (and on the test side)."""
    guard_base: Path | None = None
    """Internal (plans): JSON of guard references {guards, test, drift_loglik} replacing the start model's."""
    guard_stages: list[str] = field(default_factory=list)
    """Internal (plans): earlier stages' tasks or FILE.jsonl[:scorer], guarded as stages."""

    def __post_init__(self) -> None:
        self.guard_base = Path(self.guard_base) if self.guard_base is not None else None
        every, budget, patience = self.eval_every, self.forgetting_budget, self.patience
        bad("eval_every", every is None or every > 0, "must be > 0")
        why = "must be in [0, 1) (a drop in score: 0.05 = five points)"
        bad("forgetting_budget", budget is None or 0 <= budget < 1, why)
        bad("patience", patience is None or patience >= 1, "must be >= 1")
        bad("eval_limit", self.eval_limit > 0, "must be > 0")
        for name in ("forgetting_budget", "patience", "selection", "guard_base"):
            bad(name, getattr(self, name) is None or every is not None, "needs --eval-every")
        bad("keep", not self.keep or every is not None, "needs --eval-every")
        bad("patience", patience is None or budget is not None, "needs --forgetting-budget")


@dataclass
class RunConfig:
    """Where the run is written, how often it is saved, and who watches it."""

    output: Path = Path("runs/train")
    """Output directory (config.json, metrics.jsonl, checkpoints/, the final model)."""
    overwrite: bool = False
    """Allow writing into a non-empty output directory."""
    resume: bool = False
    """Continue the run in --output from its latest checkpoint."""
    seed: int = 0
    save_every: int = 50
    """Checkpoint every N optimizer steps (0: only at the end)."""
    keep_checkpoints: int = 2
    report_to: list[TrackerName] = field(default_factory=list)
    """Also log every metrics row to these trackers: tensorboard (OUTPUT/tensorboard), trackio (local), wandb."""
    progress: bool = True

    def __post_init__(self) -> None:
        self.output = Path(self.output)  # TrainConfig(output="runs/x") must hold a Path like the CLI's
        bad("save_every", self.save_every >= 0, "must be >= 0")
        bad("keep_checkpoints", self.keep_checkpoints > 0, "must be > 0")


@dataclass
class TrainConfig:
    """Train a causal LM on demonstrations with SDFT, SFT or seqkd."""

    data: str
    """Training data: a JSONL file, a saved HF dataset dir, a hub dataset (org/name[:config][:split]), or a task."""
    method: Method = "sdft"
    """sdft: on-policy self-distillation; sft: NLL on the demonstration; seqkd: SFT on teacher generations."""
    model: str = DEFAULT_MODEL
    """Model spec: smollm2-135m-instruct, tiny-random, a local HF directory, or a hub id."""
    source: SourceConfig = field(default_factory=SourceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    teaching: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    replay: AnchorConfig = field(default_factory=AnchorConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    run: RunConfig = field(default_factory=RunConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        sdft, hf = self.method == "sdft", self.engine.rollout == "hf"
        correcting = self.engine.rollout_correction != "none"
        bad(
            "min_new_tokens",
            self.sampling.min_new_tokens == 0 or not correcting,
            "is not supported with --rollout-correction",
        )
        why = "is for --method sdft (seqkd's teacher samples at --temperature)"
        bad("teacher_temperature", self.teaching.teacher_temperature == 1 or sdft, why)
        bad("tis", self.method != "sft" or self.engine.tis in ("auto", "none"), "sft samples nothing to weigh")
        bad("teacher_mix", self.teaching.teacher_mix == 0 or sdft, "is for --method sdft")
        bad("teacher_mix", self.teaching.teacher_mix == 0 or hf, "needs --rollout hf")
        bad("rollout_correction", not correcting or sdft, "is for --method sdft")
        bad("seqkd_filter", not self.teaching.seqkd_filter or self.method == "seqkd", "is for --method seqkd")
        bad("loss_temperature", self.loss.loss_temperature == "none" or sdft, "is for --method sdft")
        why = (
            "shards full fine-tuning only; --lora is not supported with it "
            "(LoRA's trainable state is small: train it data parallel, without --fsdp)"
        )
        bad("fsdp", not (self.compute.fsdp and self.adapter.lora), why)
        why = "supports --rollout hf only (vLLM would need the gathered weights streamed to it)"
        bad("fsdp", not self.compute.fsdp or hf, why)

    @classmethod
    def from_mapping(cls, values: typing.Mapping[str, Any]) -> TrainConfig:
        """A config from flat keys (``lr``), group keys (``optim: {lr: ...}``) or both; hyphens or underscores."""
        return build(cls, values)

    @property
    def tis_mode(self) -> str:
        """The TIS weighting that runs: none unless another program (vLLM) samples; the decode engine runs the
        trainer's own weights and kernels, as hf does."""
        if self.method == "sft":
            return "none"
        if self.engine.tis == "auto":
            return "prefix" if self.engine.rollout == "vllm" else "none"
        return self.engine.tis


GROUPS: dict[str, type] = groups(TrainConfig)
"""Group attribute of TrainConfig → its dataclass."""
GROUP_OF: dict[str, str] = {f.name: group for group, cls in GROUPS.items() for f in fields(cls)}
"""Field name → the group that holds it (the top-level fields data, method and model are in no group)."""
if len(GROUP_OF) != sum(len(fields(c)) for c in GROUPS.values()) or set(GROUP_OF) & {
    "data",
    "method",
    "model",
    *GROUPS,
}:
    raise TypeError("TrainConfig: every field name must be unique across its groups (it is a flag and a plan key)")
TRAIN_OPTIONS: dict[str, Any] = option_types(TrainConfig)
"""Every TrainConfig field, flat, with its type: what a flag, a plan key or a --config key can set."""


def config_dict(cfg: TrainConfig) -> dict:
    """The config as flat JSON-safe values (paths as strings), as written to config.json and checkpoints.

    Flat on purpose: the keys are the flags and plan keys users write, ``TrainConfig.from_mapping`` reads it back,
    and files written before the groups existed have the same keys."""
    return flat_values(cfg)
