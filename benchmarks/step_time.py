"""Seconds per optimizer step of the real training loop, measured side by side: fp32 against bf16 autocast,
SDFT against SFT, SDFT's LM head inside the loss against materialized logits, SDFT with gradient checkpointing
against without, or SDFT's hf rollout with prepacked CPU matmul weights against the stock kernels.

    .venv/bin/python benchmarks/step_time.py --method sdft --rounds 3 --steps 4     # fp32 vs bf16, one method
    .venv/bin/python benchmarks/step_time.py --compare methods --rounds 3 --steps 4  # SDFT vs SFT, one precision
    .venv/bin/python benchmarks/step_time.py --compare head --rounds 3 --steps 4     # --fused-head or not (SDFT)
    .venv/bin/python benchmarks/step_time.py --compare checkpointing --rounds 3 --steps 4  # its time cost (SDFT)
    .venv/bin/python benchmarks/step_time.py --compare prepack --rounds 3 --steps 4  # --prepack on or off (SDFT)
    .venv/bin/python benchmarks/step_time.py --compare generation --grad-accum 4  # rollout per step or per micro-batch
    .venv/bin/python benchmarks/step_time.py --compare engine                     # --rollout decode against hf

Each round runs ``train()`` once per arm, in alternating order (so drift in machine load hits both), on the
embedded model and a registered task, and reads ``seconds_per_step`` from ``metrics.jsonl``. The first step of
every run is dropped (allocator and kernel warm-up). Prints the median, min and max per arm, seconds per training
example, the median seconds of each phase of a step, and the ratio of medians; ``--json FILE`` also writes them. SDFT
steps include sampling, so their length
varies with what the model samples; the same seed gives both arms the same batches, not the same samples. SFT
trains on the demonstrations, SDFT on its own samples: the mean completion length of each is printed beside it.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from selfdistill.environment import cpu_model
from selfdistill.training.loop import TrainConfig, train
from selfdistill.training.setup import bf16_supported


@dataclass
class Args:
    """Seconds per optimizer step of the real training loop, two arms measured side by side."""

    compare: Literal["precision", "methods", "head", "checkpointing", "prepack", "generation", "engine"] = "precision"
    """precision: fp32 vs bf16 autocast for --method; methods: sdft vs sft at --precision; head: sdft with the LM
    head inside the loss vs materialized logits, at --precision; checkpointing: sdft with --gradient-checkpointing vs
    without, at --precision; prepack: sdft with --prepack on vs off, at --precision; generation: sdft sampling the
    whole step's prompts in one generation vs one per micro-batch (with --grad-accum > 1); engine: sdft's rollout
    with the decode engine vs hf."""
    model: str = "smollm2-135m-instruct"
    """The model to train."""
    data: str = "record_json"
    """A data file or registered task."""
    method: Literal["sdft", "sft", "seqkd"] = "sdft"
    """With --compare precision: the method."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """With every --compare but precision: the precision of both arms."""
    rounds: int = 3
    """Rounds, each running both arms once in alternating order."""
    steps: int = 4
    """Steps per run (the first is dropped)."""
    batch_size: int = 8
    """Prompts per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (a step trains batch size x grad accum prompts)."""
    max_new_tokens: int = 40
    """Completion budget per prompt."""
    json: Path | None = None
    """Also write the summary to this file."""


def arms_of(args: Args) -> tuple[dict[str, tuple[str, str, dict]], str]:
    """The two arms of ``--compare`` (name → (method, precision, extra config)) and what they share."""
    p = args.precision
    if args.compare == "precision":
        return {"fp32": (args.method, "fp32", {}), "bf16": (args.method, "bf16", {})}, args.method
    if args.compare == "methods":
        return {"sdft": ("sdft", p, {}), "sft": ("sft", p, {})}, f"precision {p}"
    arms = {
        "head": {"fused": {}, "materialized": {"fused_head": False}},
        "prepack": {"prepack": {"prepack": "on"}, "stock": {"prepack": "off"}},
        "checkpointing": {"checkpointing": {"gradient_checkpointing": True}, "plain": {}},
        "generation": {"per_step": {}, "per_micro_batch": {"generation_batch_size": args.batch_size}},
        "engine": {"decode": {"rollout": "decode"}, "hf": {"rollout": "hf"}},
    }[args.compare]
    return {name: ("sdft", p, extra) for name, extra in arms.items()}, f"sdft, precision {p}"


def one_run(args: Args, method: str, precision: str, options: dict, out: Path) -> list[dict]:
    cfg = TrainConfig.from_mapping(
        dict(
            data=args.data,
            model=args.model,
            method=method,
            output=out,
            overwrite=True,
            max_steps=args.steps,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            max_new_tokens=args.max_new_tokens,
            precision=precision,
            save_every=0,
            teacher_template="chat-turn",
            progress=False,
            lr=1e-5,
            **options,
        )
    )
    train(cfg)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def run_arms(args: Args, arms: dict[str, tuple[str, str, dict]]) -> dict[str, list[dict]]:
    """Each arm's metrics.jsonl rows over ``--rounds`` runs, the first step of every run dropped; the arms alternate
    their order each round, so drift in machine load hits both."""
    rows: dict[str, list[dict]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                kept = one_run(args, *arms[name], Path(tmp) / f"{name}-{r}")[1:]
                rows[name] += kept
                print(f"round {r + 1} {name}: " + " ".join(f"{row['seconds_per_step']:.2f}" for row in kept))
    return rows


def arm_summary(rows: list[dict], batch_size: int) -> dict:
    """Median, min and max seconds per step, per example (``batch_size`` examples a step), the mean completion length
    and each phase's median."""
    v = [row["seconds_per_step"] for row in rows]
    phases: dict[str, list[float]] = {}
    for row in rows:
        for key in (k for k in row if k.startswith("seconds_") and k != "seconds_per_step"):
            phases.setdefault(key.removeprefix("seconds_"), []).append(row[key])
    return {
        "median_s": statistics.median(v),
        "min_s": min(v),
        "max_s": max(v),
        "n": len(v),
        "median_s_per_example": statistics.median(v) / batch_size,
        "mean_completion_length": statistics.mean(row["completion_length"] for row in rows),
        "median_phase_s": {phase: statistics.median(t) for phase, t in phases.items()},
    }


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    arms, subject = arms_of(args)
    device = torch.device("cpu")
    print(
        f"cpu {cpu_model()}, capability {torch.backends.cpu.get_cpu_capability()}, "
        f"bf16 used by 'auto': {bf16_supported(device)}"
    )
    print(f"threads {torch.get_num_threads()}, {subject}, {args.data}, batch {args.batch_size} x {args.grad_accum}")
    t0 = time.perf_counter()
    rows = run_arms(args, arms)
    per_step = args.batch_size * args.grad_accum
    summary: dict = {"cpu": cpu_model(), "compare": args.compare, "batch_size": args.batch_size}
    summary |= {"grad_accum": args.grad_accum, "threads": torch.get_num_threads()}
    summary |= {name: arm_summary(rows[name], per_step) for name in arms}
    first, second = arms
    ratio_key = f"{first}_over_{second}"
    summary[ratio_key] = summary[first]["median_s"] / summary[second]["median_s"]
    for name in arms:
        s = summary[name]
        print(
            f"{name}: median {s['median_s']:.2f} s/step = {s['median_s_per_example']:.3f} s/example "
            f"(min {s['min_s']:.2f}, max {s['max_s']:.2f}, n {s['n']}, "
            f"mean completion {s['mean_completion_length']:.1f} tokens)"
        )
        print("  phases (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in s["median_phase_s"].items()))
    print(f"{first} / {second} (medians): {summary[ratio_key]:.2f}x | wall {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
