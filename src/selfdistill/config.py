"""What a training run is told: ``TrainConfig``, the choices its fields take, and the default model.

    cfg = TrainConfig(data="demos.jsonl", method="sdft", lr=1e-4)   # bad values raise ValueError("lr: ...")

Standard library only (plus the template check in ``prompts``, which needs no model code), so validating a plan or
printing ``--help`` never imports torch. Each choice is written once, as a ``Literal``; code that needs the values
reads them with ``get_args``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from selfdistill import DEFAULT_MODEL
from selfdistill.data import parse_columns
from selfdistill.errors import UserError
from selfdistill.training.prompts import resolve_template

Method = Literal["sdft", "sft", "seqkd"]
Precision = Literal["auto", "fp32", "bf16"]
TeacherMode = Literal["ema", "frozen", "live"]
Divergence = Literal["forward", "reverse", "jsd"]
Support = Literal["full", "topk", "sampled"]
RolloutName = Literal["hf", "vllm"]
TISChoice = Literal["auto", "none", "sequence", "prefix"]
PrepackChoice = Literal["auto", "on", "off"]
TrackerName = Literal["tensorboard", "trackio", "wandb"]
Correction = Literal["none", "topk"]


class ConfigError(UserError):
    """A setting that does not fit the loaded model or data (checked after loading; a user error, exit code 2)."""


@dataclass
class TrainConfig:
    """Train a causal LM on demonstrations with SDFT, SFT or seqkd."""

    data: str
    """Training data: a JSONL file, a saved HF dataset directory, a hub dataset (org/name[:config][:split]), or a
    registered task name (its train split)."""
    method: Method = "sdft"
    """sdft: on-policy self-distillation; sft: NLL on the demonstration; seqkd: SFT on teacher generations."""
    model: str = DEFAULT_MODEL
    """Model spec: smollm2-135m-instruct, tiny-random, a local HF directory, or a hub id."""
    output: Path = Path("runs/train")
    """Output directory (config.json, metrics.jsonl, checkpoints/, the final model)."""
    overwrite: bool = False
    """Allow writing into a non-empty output directory."""
    resume: bool = False
    """Continue the run in --output from its latest checkpoint."""
    data_dir: Path | None = None
    """Where registered task data lives (default: $SELFDISTILL_DATA or ../shared/data)."""
    columns: str | None = None
    """Where the fields are in data whose columns are named otherwise: prompt=question,completion=answer."""

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
    seed: int = 0
    precision: Precision = "auto"
    """Compute precision: bf16 autocast over fp32 master weights where supported (auto), or plain fp32."""
    device: str = "auto"
    """cpu, cuda, cuda:1, ... (auto: cuda when available)."""

    temperature: float = 1.0
    """Sampling temperature of rollouts."""
    top_p: float = 1.0
    num_generations: int = 1
    """Samples per prompt."""
    max_new_tokens: int = 128
    """Longest sampled completion."""
    min_new_tokens: int = 0
    """Sampled completions do not end before this many tokens (fixed-length rollouts, for benchmarks)."""
    teacher: TeacherMode = "ema"
    """Teacher weights: EMA of the student, frozen at the start of this run, or the student itself."""
    ema_rate: float = 0.01
    """EMA rate α: φ ← (1−α)·φ + α·θ after every optimizer step."""
    teacher_template: str = "paper"
    """Teacher prompt template: paper, chat-turn, or a format string with {prompt} and {demonstration}."""
    teacher_temperature: float = 1.0
    """SDFT's target is softmax(teacher logits / τ): τ < 1 sharpens it toward the teacher's mode (1: the paper)."""
    divergence: Divergence = "forward"
    """Per-token divergence: forward KL(teacher‖student) (what the paper ran), reverse, or JSD."""
    jsd_beta: float = 0.5
    support: Support = "full"
    """Vocabulary support of the divergence: full, the teacher's top-k plus a tail bucket, or the sampled token."""
    topk: int = 20
    skip_first_tokens: int = 3
    """Completion tokens excluded from the SDFT loss at the start (teacher artifacts)."""
    max_teacher_prompt_tokens: int = 2048
    """Teacher prompt budget; the demonstration (never the question) is cut to fit."""
    truncate_demonstration: bool = True
    """Cut over-long demonstrations (counted in the logs); with --no-truncate-demonstration, fail instead."""
    loss_chunk_size: int = 64
    """Completion tokens per chunk when computing the divergence (bounds memory): per row where the logits are
    materialized, positions of the whole batch where the LM head runs inside the loss (--fused-head)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them (transformers'
    gradient checkpointing, non-reentrant): less memory per completion token, one more forward of the student."""
    fused_head: bool = True
    """For the default SDFT loss (forward KL, full support), run the LM heads inside the loss chunk by chunk, from
    the hidden states, so no [batch, completion, vocabulary] logits exist (memory flat in the vocabulary). Used
    where it is exact (a plain linear head; checked on the first example) and nothing else needs the logits (no
    TIS, corrected rollouts or --fsdp; the anchor's term runs the same way); --no-fused-head always materializes
    them."""
    prepack: PrepackChoice = "auto"
    """On a CPU, the hf rollout decodes with matmul weights packed once per rollout instead of repacked at every
    decode step. auto: in bf16 only (oneDNN; the same results as the stock kernels); on: in fp32 as well (MKL's
    packed sgemm: faster, but it rounds differently in the last bits and holds a packed copy of the weights while
    it samples, +0.7 GB peak on the embedded model); off: the stock kernels."""
    rollout: RolloutName = "hf"
    """Rollout engine: hf (model.generate on the trained model) or vllm (an in-process vLLM given the weights after
    every step)."""
    tis: TISChoice = "auto"
    """Truncated importance sampling of engine rollouts: prefix, sequence, none (auto: prefix with vllm, none with
    hf, whose sampler is the trainer itself)."""
    tis_cap: float = 2.0
    """Largest importance weight."""

    anchor: str | None = None
    """Replay anchor: prompts without demonstrations (a JSONL file, a dataset, a registered task's train prompts, or
    an anchor pool such as general_chat) on which the student is also pulled toward the model it started from."""
    anchor_weight: float = 1.0
    """W in loss + W · KL(start model ‖ student) on the student's samples for the anchor prompts."""
    anchor_batch_size: int | None = None
    """Anchor prompts per micro-batch (default: --batch-size)."""
    teacher_mix: float = 0.0
    """sdft warm start: this fraction of rollouts is sampled by the teacher with the demonstration in context."""
    teacher_mix_until: float | None = None
    """With --teacher-mix: the fraction falls linearly to 0 at this fraction of the steps (default: constant)."""
    rollout_correction: Correction = "none"
    """sdft: topk replaces each student token outside the teacher's top --correction-k by a teacher sample."""
    correction_k: int = 20
    seqkd_filter: bool = False
    """seqkd: keep a teacher generation only when the task's scorer accepts it."""

    lora: bool = False
    """Train a LoRA adapter (peft) instead of all weights."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    merge: bool = False
    """With --lora, also write the merged model to OUTPUT/merged."""

    fsdp: bool = False
    """Under torchrun: shard the student and its teacher over the processes (FSDP2, one unit per decoder layer, fp32
    shards) instead of holding a copy on each, for models whose training state does not fit on one device."""

    report_to: list[TrackerName] = field(default_factory=list)
    """Also log every metrics row to these trackers: tensorboard (OUTPUT/tensorboard), trackio (local), wandb."""

    save_every: int = 50
    """Checkpoint every N optimizer steps (0: only at the end)."""
    keep_checkpoints: int = 2
    trust_remote_code: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"{name.replace('_', '-')}: {why}")

        checks = [
            ("lr", self.lr > 0, "must be > 0"),
            ("max_steps", self.max_steps is None or self.max_steps > 0, "must be > 0"),
            ("epochs", self.epochs > 0, "must be > 0"),
            ("batch_size", self.batch_size > 0, "must be > 0"),
            ("grad_accum", self.grad_accum > 0, "must be > 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "must be > 0"),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("num_generations", self.num_generations > 0, "must be > 0"),
            ("max_new_tokens", self.max_new_tokens > 0, "must be > 0"),
            ("min_new_tokens", 0 <= self.min_new_tokens <= self.max_new_tokens, "must be in [0, max-new-tokens]"),
            (
                "min_new_tokens",
                self.min_new_tokens == 0 or self.rollout_correction == "none",
                "is not supported with --rollout-correction",
            ),
            ("ema_rate", 0 < self.ema_rate <= 1, "must be in (0, 1]"),
            ("teacher_temperature", self.teacher_temperature > 0, "must be > 0"),
            (
                "teacher_temperature",
                self.teacher_temperature == 1 or self.method == "sdft",
                "is for --method sdft (seqkd's teacher samples at --temperature)",
            ),
            ("jsd_beta", 0 <= self.jsd_beta <= 1, "must be in [0, 1]"),
            ("topk", self.topk > 0, "must be > 0"),
            ("skip_first_tokens", self.skip_first_tokens >= 0, "must be >= 0"),
            ("max_teacher_prompt_tokens", self.max_teacher_prompt_tokens > 0, "must be > 0"),
            ("loss_chunk_size", self.loss_chunk_size > 0, "must be > 0"),
            ("tis_cap", self.tis_cap > 0, "must be > 0"),
            (
                "tis",
                self.rollout != "hf" or self.tis in ("auto", "none"),
                "means nothing with --rollout hf (the sampler is the trainer's own model); use --rollout vllm",
            ),
            ("tis", self.method != "sft" or self.tis in ("auto", "none"), "sft samples nothing to weigh"),
            ("anchor_weight", self.anchor_weight > 0, "must be > 0"),
            ("anchor_batch_size", self.anchor_batch_size is None or self.anchor_batch_size > 0, "must be > 0"),
            ("teacher_mix", 0 <= self.teacher_mix <= 1, "must be in [0, 1]"),
            ("teacher_mix", self.teacher_mix == 0 or self.method == "sdft", "is for --method sdft"),
            ("teacher_mix", self.teacher_mix == 0 or self.rollout == "hf", "needs --rollout hf"),
            (
                "teacher_mix_until",
                self.teacher_mix_until is None or 0 < self.teacher_mix_until <= 1,
                "must be in (0, 1]",
            ),
            ("teacher_mix_until", self.teacher_mix_until is None or self.teacher_mix > 0, "needs --teacher-mix"),
            ("correction_k", self.correction_k >= 1, "must be >= 1"),
            ("rollout_correction", self.rollout_correction == "none" or self.method == "sdft", "is for --method sdft"),
            (
                "rollout_correction",
                self.rollout_correction == "none" or self.rollout == "hf",
                "needs --rollout hf (the teacher checks each token as it is drawn, which a vLLM engine cannot do)",
            ),
            ("seqkd_filter", not self.seqkd_filter or self.method == "seqkd", "is for --method seqkd"),
            ("lora_r", self.lora_r > 0, "must be > 0"),
            ("save_every", self.save_every >= 0, "must be >= 0"),
            ("keep_checkpoints", self.keep_checkpoints > 0, "must be > 0"),
            ("merge", self.lora or not self.merge, "needs --lora"),
            (
                "fsdp",
                not (self.fsdp and self.lora),
                "shards full fine-tuning only; --lora is not supported with it "
                "(LoRA's trainable state is small: train it data parallel, without --fsdp)",
            ),
            (
                "fsdp",
                not self.fsdp or self.rollout == "hf",
                "supports --rollout hf only (vLLM would need the gathered weights streamed to it)",
            ),
        ]
        for name, ok, why in checks:
            if not ok:
                bad(name, why)
        if self.divergence == "jsd" and self.support == "topk":
            bad("divergence", "jsd is not supported with --support topk")
        resolve_template(self.teacher_template)
        parse_columns(self.columns)

    @property
    def tis_mode(self) -> str:
        """The TIS weighting that runs: none unless an engine other than the trainer samples."""
        if self.method == "sft":
            return "none"
        if self.tis == "auto":
            return "prefix" if self.rollout != "hf" else "none"
        return self.tis
        self.output = Path(self.output)


def config_dict(cfg: TrainConfig) -> dict:
    """The config as JSON-safe values (paths as strings), as written to train_config.json and checkpoints."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
