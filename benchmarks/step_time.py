"""Seconds per optimizer step of the real training loop, measured side by side: fp32 against bf16 autocast,
SDFT against SFT, SDFT's LM head inside the loss against materialized logits, SDFT with gradient checkpointing
against without, or SDFT's hf rollout with prepacked CPU matmul weights against the stock kernels.

    .venv/bin/python benchmarks/step_time.py --method sdft --rounds 3 --steps 4     # fp32 vs bf16, one method
    .venv/bin/python benchmarks/step_time.py --compare methods --rounds 3 --steps 4  # SDFT vs SFT, one precision
    .venv/bin/python benchmarks/step_time.py --compare head --rounds 3 --steps 4     # --fused-head or not (SDFT)
    .venv/bin/python benchmarks/step_time.py --compare checkpointing --rounds 3 --steps 4  # its time cost (SDFT)
    .venv/bin/python benchmarks/step_time.py --compare prepack --rounds 3 --steps 4  # --prepack on or off (SDFT)

Each round runs ``train()`` once per arm, in alternating order (so drift in machine load hits both), on the
embedded model and a registered task, and reads ``seconds_per_step`` from ``metrics.jsonl``. The first step of
every run is dropped (allocator and kernel warm-up). Prints the median, min and max per arm, seconds per training
example, the median seconds of each phase of a step, and the ratio of medians; ``--json FILE`` also writes them. SDFT
steps include sampling, so their length
varies with what the model samples; the same seed gives both arms the same batches, not the same samples. SFT
trains on the demonstrations, SDFT on its own samples: the mean completion length of each is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from selfdistill.environment import cpu_model
from selfdistill.training.loop import TrainConfig, train
from selfdistill.training.setup import bf16_supported


def one_run(args: argparse.Namespace, method: str, precision: str, options: dict, out: Path) -> list[dict]:
    cfg = TrainConfig(
        data=args.data,
        model=args.model,
        method=method,
        output=out,
        overwrite=True,
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        precision=precision,
        save_every=0,
        teacher_template="chat-turn",
        progress=False,
        lr=1e-5,
        **options,
    )
    train(cfg)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--compare",
        default="precision",
        choices=["precision", "methods", "head", "checkpointing", "prepack"],
        help="precision: fp32 vs bf16 autocast for --method; methods: sdft vs sft at --precision; "
        "head: sdft with the LM head inside the loss vs materialized logits, at --precision; "
        "checkpointing: sdft with --gradient-checkpointing vs without, at --precision; "
        "prepack: sdft with --prepack on vs off, at --precision",
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="record_json", help="a data file or registered task")
    parser.add_argument("--method", default="sdft", choices=["sdft", "sft", "seqkd"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="with --compare methods")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps per run (the first is dropped)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device("cpu")
    if args.compare == "precision":
        arms = {"fp32": (args.method, "fp32", {}), "bf16": (args.method, "bf16", {})}
        subject = args.method
    elif args.compare == "methods":
        arms = {"sdft": ("sdft", args.precision, {}), "sft": ("sft", args.precision, {})}
        subject = f"precision {args.precision}"
    elif args.compare == "head":
        arms = {"fused": ("sdft", args.precision, {}), "materialized": ("sdft", args.precision, {"fused_head": False})}
        subject = f"sdft, precision {args.precision}"
    elif args.compare == "prepack":
        arms = {
            "prepack": ("sdft", args.precision, {"prepack": "on"}),
            "stock": ("sdft", args.precision, {"prepack": "off"}),
        }
        subject = f"sdft, precision {args.precision}"
    else:
        arms = {
            "checkpointing": ("sdft", args.precision, {"gradient_checkpointing": True}),
            "plain": ("sdft", args.precision, {}),
        }
        subject = f"sdft, precision {args.precision}"
    print(
        f"cpu {cpu_model()}, capability {torch.backends.cpu.get_cpu_capability()}, "
        f"bf16 used by 'auto': {bf16_supported(device)}"
    )
    print(f"threads {torch.get_num_threads()}, {subject}, {args.data}, batch {args.batch_size}")
    times: dict[str, list[float]] = {name: [] for name in arms}
    lengths: dict[str, list[float]] = {name: [] for name in arms}
    phases: dict[str, dict[str, list[float]]] = {name: {} for name in arms}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(arms) if r % 2 == 0 else list(arms)[::-1]
            for name in order:
                rows = one_run(args, *arms[name], Path(tmp) / f"{name}-{r}")[1:]
                times[name] += [row["seconds_per_step"] for row in rows]
                lengths[name] += [row["completion_length"] for row in rows]
                for row in rows:
                    for key in (k for k in row if k.startswith("seconds_") and k != "seconds_per_step"):
                        phases[name].setdefault(key.removeprefix("seconds_"), []).append(row[key])
                print(f"round {r + 1} {name}: " + " ".join(f"{row['seconds_per_step']:.2f}" for row in rows))
    summary: dict = {"cpu": cpu_model(), "compare": args.compare, "batch_size": args.batch_size}
    for name, v in times.items():
        summary[name] = {
            "median_s": statistics.median(v),
            "min_s": min(v),
            "max_s": max(v),
            "n": len(v),
            "median_s_per_example": statistics.median(v) / args.batch_size,
            "mean_completion_length": statistics.mean(lengths[name]),
            "median_phase_s": {phase: statistics.median(t) for phase, t in phases[name].items()},
        }
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
