"""Rollout throughput of the hf, decode and vllm engines on the same model and batch, measured side by side.

    .venv-vllm/bin/python benchmarks/rollout_speed.py --rounds 3 --batch-size 8 --new-tokens 64

    .venv/bin/python benchmarks/rollout_speed.py --hf-only --batch-size 32 --new-tokens 64   # hf against decode

The engines sample the same prompts at T=1 with exactly ``--new-tokens`` new tokens per row (end of turn is
blocked until then), so they do the same work. Rounds alternate the engines (drift in machine load hits both);
the first call of each engine is a warm-up and dropped. Prints the median seconds and completion tokens/s per
engine and the ratio of medians; ``--json FILE`` writes them. hf and decode run in fp32 and, where the CPU has
native bf16, under bf16 autocast as training does; vllm runs in fp32 (and bf16 with ``--vllm-bf16``).
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
import tyro

from selfdistill.environment import cpu_model
from selfdistill.evaluation.tasks import get_task
from selfdistill.models import load_model
from selfdistill.training.engines import Sampling, make_engine
from selfdistill.training.prompts import student_prompt_ids
from selfdistill.training.setup import autocast, bf16_supported


@dataclass
class Args:
    """Rollout throughput of the hf and vllm engines on the same model and batch, side by side."""

    model: str = "smollm2-135m-instruct"
    """The model to sample from."""
    task: str = "record_json"
    """Registered task whose training prompts are used."""
    rounds: int = 3
    """Rounds, each calling every engine once in alternating order."""
    batch_size: int = 8
    """Prompts per rollout."""
    new_tokens: int = 64
    """Tokens sampled per row, exactly."""
    vllm_bf16: bool = False
    """Also run vllm in bf16."""
    hf_only: bool = False
    """Leave vllm out (to time hf in another environment, e.g. .venv beside .venv-vllm)."""
    json: Path | None = None
    """Also write the summary to this file."""


def start_engines(args: Args, model, tok) -> tuple[dict, dict[str, float]]:
    """The engines to compare (name → engine) and the seconds each vllm engine took to start."""
    device = torch.device("cpu")
    engines = {"hf fp32": make_engine("hf", model, tok), "decode fp32": make_engine("decode", model, tok)}
    if bf16_supported(device):
        bf16 = functools.partial(autocast, "bf16", device)
        engines["hf bf16 autocast"] = make_engine("hf", model, tok, autocast=bf16)
        engines["decode bf16 autocast"] = make_engine("decode", model, tok, autocast=bf16)
    start_seconds = {}
    for name, dtype, wanted in (("vllm fp32", None, True), ("vllm bf16", "bfloat16", args.vllm_bf16)):
        if wanted and not args.hf_only:
            t0 = time.perf_counter()
            engines[name] = make_engine("vllm", model, tok, **({"dtype": dtype} if dtype else {}))
            start_seconds[name] = time.perf_counter() - t0
    return engines, start_seconds


def time_engines(engines: dict, prompts: list[list[int]], spec: Sampling, rounds: int) -> tuple[dict, dict]:
    """Seconds and completion tokens of every call after a dropped warm-up, the order alternating each round."""
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, list[int]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.generate(prompts, spec)  # warm-up, dropped
    for r in range(rounds):
        order = list(engines) if r % 2 == 0 else list(reversed(engines))
        for name in order:
            t = time.perf_counter()
            ro = engines[name].generate(prompts, spec)
            seconds[name].append(time.perf_counter() - t)
            tokens[name].append(sum(len(c) for c in ro.completions))
    return seconds, tokens


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    model, tok = load_model(args.model, device=torch.device("cpu"))
    model.eval()
    examples = get_task(args.task).train_examples()[: args.batch_size]
    prompts = [student_prompt_ids(tok, ex) for ex in examples]
    spec = Sampling(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=1.0)
    engines, start_seconds = start_engines(args, model, tok)
    seconds, tokens = time_engines(engines, prompts, spec, args.rounds)
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
