"""The floor under an hf rollout on this CPU: how fast the machine reads memory, how close the decode step's
matmuls come to that, and how long a real rollout takes beside the floor.

    .venv/bin/python benchmarks/decode_floor.py                    # embedded model, 8 rows, 64 new tokens
    .venv/bin/python benchmarks/decode_floor.py --model tiny-random --rounds 1 --new-tokens 8   # the script runs
    .venv/bin/python benchmarks/decode_floor.py --rows 32 --precisions fp32   # a CPU without native bf16

At a rollout's batch size, a decode step multiplies a few rows by every weight matrix of the model once. The
weights do not fit in cache, so every sampled token reads all of them from memory, and a rollout can take no less
than (weight bytes) × (new tokens) / (read bandwidth). Measured, each as the median of ``--rounds`` repeats:

1. **read bandwidth**: a sum over a buffer far larger than the last-level cache;
2. **the model's linears** (the LM head included), each called once with ``--rows`` rows, as a decode step calls
   them: bf16 autocast with prepacked weights (the default rollout) and fp32 with the stock kernels (the
   forgetting benchmark's), as GB/s of weights read;
3. **``rollout.sample``** (the hf engine's decode loop) and **the decode engine** (``--rollout decode``), exactly
   ``--new-tokens`` tokens a row, in each precision, beside the floor;
4. a CPU profile of one bf16 ``sample``: its op time split into the linears, attention, KV-cache concatenation and
   the rest;
5. with ``--variants``, two ways to run the same bf16 rollout that are not built into selfdistill, side by side with
   the default in alternating rounds: a bf16 copy of the weights (no autocast casts; prepacked as the default), and
   that copy decoding through a static KV cache with ``torch.compile`` (inductor, static shapes, no CUDA graphs;
   its first call, which compiles, is timed apart).

Prints a table and writes ``--json FILE``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import tyro
from torch import nn

from selfdistill.environment import cpu_model
from selfdistill.models import load_model
from selfdistill.training.engines import Sampling, make_engine
from selfdistill.training.prepack import prepacked_linears
from selfdistill.training.rollout import SeededSampler, left_pad, sample

BUFFER_BYTES = 1 << 30  # 1 GiB: dozens of times any last-level cache of these machines
PROFILE_GROUPS = {  # op-name fragment → group; the first fragment found in an op's name wins
    "linear": "linears",
    "aten::mm": "linears",
    "aten::addmm": "linears",
    "mkl_linear": "linears",
    "attention": "attention",
    "aten::cat": "KV-cache concatenation",
}


@dataclass
class Args:
    """The floor under an hf rollout on this CPU, beside the rollout itself."""

    model: str = "smollm2-135m-instruct"
    """The model to sample from."""
    rows: int = 8
    """Rows per rollout (the batch size)."""
    new_tokens: int = 64
    """Tokens sampled per row, exactly."""
    rounds: int = 5
    """Repeats of every timing (their median is reported)."""
    variants: bool = False
    """Also time a bf16 weight copy, compiled or not."""
    precisions: list[Literal["bf16", "fp32"]] = field(default_factory=lambda: ["bf16", "fp32"])
    """Which precisions to time (fp32 alone on a CPU without native bf16, where bf16 is emulated)."""
    json: Path | None = None
    """Also write the summary to this file."""


def median_seconds(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up: allocations, packing, first-call dispatch
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth(rounds: int) -> float:
    """Bytes per second that a reduction over a 1 GiB buffer reads."""
    buffer = torch.ones(BUFFER_BYTES // 4, dtype=torch.float32)
    return BUFFER_BYTES / median_seconds(buffer.sum, rounds)


def linear_pass(model: nn.Module, rows: int, bf16: bool, rounds: int) -> tuple[int, float]:
    """Bytes of weights a decode step reads through the model's linears, and seconds for one pass over them."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    inputs = [torch.randn(rows, 1, m.in_features) for m in linears]
    nbytes = sum(m.weight.numel() for m in linears) * (2 if bf16 else 4)

    def one_pass() -> None:
        for module, x in zip(linears, inputs, strict=True):
            module(x)

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), prepacked_linears(model, rows):
        return nbytes, median_seconds(one_pass, rounds)


def profile_groups(run: Callable[[], object]) -> dict[str, float]:
    """Self CPU seconds of one call, summed by PROFILE_GROUPS (the rest under "other ops")."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        group = next((g for fragment, g in PROFILE_GROUPS.items() if fragment in event.key), "other ops")
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e6
    return groups


def variants(model: nn.Module, tok, prompts: list[list[int]], new_tokens: int, rounds: int) -> dict[str, object]:
    """Seconds per bf16 rollout of the default (autocast), a bf16 weight copy, and that copy compiled."""
    from transformers.generation.configuration_utils import CompileConfig

    copy16 = copy.deepcopy(model).to(torch.bfloat16)
    seeds = list(range(len(prompts)))
    ids, mask = left_pad(prompts, tok.pad_token_id)
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # transformers compiles on accelerators only unless told

    def default() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sample(
                model, tok, prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens, logprobs=False, seeds=seeds
            )

    def bf16_copy() -> None:
        sample(copy16, tok, prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens, logprobs=False, seeds=seeds)

    def compiled() -> None:
        with torch.no_grad():
            copy16.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tok.pad_token_id,
                logits_processor=[SeededSampler(seeds, 1.0, 1.0, torch.device("cpu"))],
                cache_implementation="static",
                compile_config=compile_config,
            )

    start = time.perf_counter()
    compiled()
    result: dict[str, object] = {"compile_first_call_s": time.perf_counter() - start}
    arms = {
        "autocast, prepacked (default)": default,
        "bf16 copy, prepacked": bf16_copy,
        "bf16 copy, static cache + torch.compile": compiled,
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
            start = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - start)
    result.update({name: {"median_s": statistics.median(t), "all_s": t} for name, t in times.items()})
    return result


def sample_vs_floor(model: nn.Module, tok, prompts: list[list[int]], args: Args, bandwidth: float) -> dict:
    """Per precision (bf16 autocast, fp32): the weights a token reads, its floor, the linears alone, ``sample`` and
    the decode engine; printed as table rows. Also returns the bf16 ``sample`` call under ``"profiled"``."""
    summary: dict = {}
    spec = Sampling(temperature=1.0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    chosen = [(n, b) for n, b in (("bf16 autocast", True), ("fp32", False)) if n.split()[0] in args.precisions]
    for name, bf16 in chosen:
        nbytes, pass_s = linear_pass(model, args.rows, bf16, args.rounds)
        floor_s = nbytes * args.new_tokens / bandwidth

        def run(bf16: bool = bf16) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                sample(
                    model,
                    tok,
                    prompts,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    logprobs=False,
                    seeds=list(range(args.rows)),
                )

        sample_s = median_seconds(run, args.rounds)
        cast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext
        engine = make_engine("decode", model, tok, autocast=cast)
        seeds = list(range(args.rows))
        decode_s = median_seconds(functools.partial(engine.generate, prompts, spec, seeds=seeds), args.rounds)
        summary[name] = {
            "weight_mb": nbytes / 1e6,
            "floor_s": floor_s,
            "linear_pass_s": pass_s,
            "linear_gb_s": nbytes / pass_s / 1e9,
            "sample_s": sample_s,
            "decode_s": decode_s,
        }
        print(
            f"| {name} | {nbytes / 1e6:.0f} MB | {floor_s:.2f} s | {nbytes / pass_s / 1e9:.1f} | "
            f"{sample_s:.2f} s ({sample_s / floor_s:.1f}x) | {decode_s:.2f} s ({decode_s / floor_s:.1f}x) |"
        )
        if bf16:
            summary["profiled"] = run
    return summary


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    model, tok = load_model(args.model)
    model.eval()
    prompts = [
        tok(f"Question {i}: what is the capital of country number {i}? Answer briefly.")["input_ids"]
        for i in range(args.rows)
    ]
    bandwidth = read_bandwidth(args.rounds)
    summary: dict = {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "model": args.model,
        "rows": args.rows,
        "new_tokens": args.new_tokens,
        "read_bandwidth_gb_s": bandwidth / 1e9,
    }
    print(
        f"cpu {summary['cpu']}, {summary['threads']} threads; {args.model}, {args.rows} rows, "
        f"{args.new_tokens} new tokens; read bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    print(
        "| precision | weights read per token | floor | linears alone (GB/s) | hf sample (/ floor) | decode (/ floor) |"
    )
    print("|---|---|---|---|---|---|")
    summary |= sample_vs_floor(model, tok, prompts, args, bandwidth)
    if "profiled" in summary:
        groups = summary["bf16_profile_s"] = profile_groups(summary.pop("profiled"))
        total = sum(groups.values())
        print(
            "bf16 sample, self CPU time by op group: "
            + ", ".join(f"{g} {s:.2f} s ({s / total:.0%})" for g, s in sorted(groups.items(), key=lambda kv: -kv[1]))
        )
    if args.variants:
        summary["variants"] = found = variants(model, tok, prompts, args.new_tokens, args.rounds)
        print(f"torch.compile's first call (compiles): {found['compile_first_call_s']:.1f} s")
        for name, v in found.items():
            if isinstance(v, dict):
                print(f"{name}: median {v['median_s']:.2f} s ({', '.join(f'{t:.2f}' for t in v['all_s'])})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
