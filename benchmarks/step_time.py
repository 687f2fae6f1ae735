"""Seconds per optimizer step of the real training loop, fp32 vs bf16 autocast, measured side by side.

    .venv/bin/python benchmarks/step_time.py --method sdft --rounds 3 --steps 4

Each round runs ``train()`` once per precision, in alternating order (so drift in machine load hits both), on
the embedded model and a registered task, and reads ``seconds_per_step`` from ``metrics.jsonl``. The first step
of every run is dropped (allocator and kernel warm-up). Prints the median, min and max per precision and the
fp32/bf16 ratio of medians; ``--json FILE`` also writes them. SDFT steps include sampling, so their length varies
with what the model samples; the same seed gives both precisions the same batches, not the same samples.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from selfdistill.train import TrainConfig, train
from selfdistill.training_setup import bf16_supported


def one_run(args: argparse.Namespace, precision: str, out: Path) -> list[dict]:
    cfg = TrainConfig(
        data=args.data, model=args.model, method=args.method, output=out, overwrite=True, max_steps=args.steps,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, precision=precision, save_every=0,
        teacher_template="chat-turn", progress=False, lr=1e-5,
    )  # fmt: skip
    train(cfg)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="record_json", help="a data file or registered task")
    parser.add_argument("--method", default="sdft", choices=["sdft", "sft", "seqkd"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps per run (the first is dropped)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device("cpu")
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, bf16 used by 'auto': {bf16_supported(device)}")
    print(f"threads {torch.get_num_threads()}, {args.method}, {args.data}, batch {args.batch_size}")
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    lengths: dict[str, list[float]] = {"fp32": [], "bf16": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["fp32", "bf16"] if r % 2 == 0 else ["bf16", "fp32"]
            for precision in order:
                rows = one_run(args, precision, Path(tmp) / f"{precision}-{r}")[1:]
                times[precision] += [row["seconds_per_step"] for row in rows]
                lengths[precision] += [row["completion_length"] for row in rows]
                print(f"round {r + 1} {precision}: " + " ".join(f"{row['seconds_per_step']:.2f}" for row in rows))
    summary = {
        p: {
            "median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "n": len(v),
            "mean_completion_length": statistics.mean(lengths[p]),
        }
        for p, v in times.items()
    }  # fmt: skip
    summary["fp32_over_bf16"] = summary["fp32"]["median_s"] / summary["bf16"]["median_s"]
    for p in ("fp32", "bf16"):
        s = summary[p]
        print(
            f"{p}: median {s['median_s']:.2f} s/step (min {s['min_s']:.2f}, max {s['max_s']:.2f}, n {s['n']}, "
            f"mean completion {s['mean_completion_length']:.1f} tokens)"
        )
    print(f"fp32 / bf16 (medians): {summary['fp32_over_bf16']:.2f}x | wall {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
