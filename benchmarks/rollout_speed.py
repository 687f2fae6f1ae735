"""Rollout throughput of the hf and vllm engines on the same model and batch, measured side by side.

    .venv-vllm/bin/python benchmarks/rollout_speed.py --rounds 3 --batch-size 8 --new-tokens 64

Both engines sample the same prompts at T=1 with exactly ``--new-tokens`` new tokens per row (end of turn is
blocked until then), so they do the same work. Rounds alternate the engines (drift in machine load hits both);
the first call of each engine is a warm-up and dropped. Prints the median seconds and completion tokens/s per
engine and the ratio of medians; ``--json FILE`` writes them. hf runs in fp32 and, where the CPU has native bf16,
under bf16 autocast as training does; vllm runs in fp32 (and bf16 with ``--vllm-bf16``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import transformers

from selfdistill.environment import cpu_model
from selfdistill.evaluation.tasks import get_task
from selfdistill.models import load_model
from selfdistill.training.engines import Sampling, make_engine
from selfdistill.training.prompts import student_prompt_ids
from selfdistill.training.setup import autocast, bf16_supported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="record_json", help="registered task whose training prompts are used")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--vllm-bf16", action="store_true")
    parser.add_argument(
        "--hf-only",
        action="store_true",
        help="leave vllm out (to time hf in another environment, e.g. .venv beside .venv-vllm)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device("cpu")
    model, tok = load_model(args.model, device=device)
    model.eval()
    examples = get_task(args.task).train_examples()[: args.batch_size]
    prompts = [student_prompt_ids(tok, ex) for ex in examples]
    spec = Sampling(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=1.0)
    engines = {"hf fp32": make_engine("hf", model, tok)}
    if bf16_supported(device):
        engines["hf bf16 autocast"] = make_engine("hf", model, tok, autocast=lambda: autocast("bf16", device))
    start_seconds = {}
    if not args.hf_only:
        t0 = time.perf_counter()
        engines["vllm fp32"] = make_engine("vllm", model, tok)
        start_seconds["vllm fp32"] = time.perf_counter() - t0
    if args.vllm_bf16 and not args.hf_only:
        t0 = time.perf_counter()
        engines["vllm bf16"] = make_engine("vllm", model, tok, dtype="bfloat16")
        start_seconds["vllm bf16"] = time.perf_counter() - t0
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, list[int]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.generate(prompts, spec)  # warm-up, dropped
    for r in range(args.rounds):
        order = list(engines) if r % 2 == 0 else list(reversed(engines))
        for name in order:
            t = time.perf_counter()
            ro = engines[name].generate(prompts, spec)
            seconds[name].append(time.perf_counter() - t)
            tokens[name].append(sum(len(c) for c in ro.completions))
    summary = {
        "cpu": cpu_model(),
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "engine_start_seconds": start_seconds,
        "engines": {},
    }
    print(
        f"{summary['cpu']} | transformers {transformers.__version__} | {summary['threads']} threads | {args.model} | "
        f"batch {args.batch_size} x "
        f"{args.new_tokens} new tokens | {args.rounds} rounds"
    )
    for name in engines:
        med = statistics.median(seconds[name])
        rate = statistics.median(n / s for n, s in zip(tokens[name], seconds[name], strict=True))
        summary["engines"][name] = {
            "median_seconds": med,
            "tokens_per_second": rate,
            "seconds": seconds[name],
            "tokens": tokens[name],
        }
        print(
            f"{name:18s} median {med:6.2f} s  {rate:6.1f} completion tokens/s  (all: "
            + ", ".join(f"{s:.2f}" for s in seconds[name])
            + ")"
        )
    base = summary["engines"]["hf fp32"]["median_seconds"]
    for name in engines:
        if name != "hf fp32":
            ratio = base / summary["engines"][name]["median_seconds"]
            print(f"speed-up of {name} over hf fp32 (ratio of medians): {ratio:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
