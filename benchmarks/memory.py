"""Peak memory of SDFT training against completion length: one fresh process per length, the same everything else.

    .venv/bin/python benchmarks/memory.py                      # the embedded model, 32 and 128 new tokens
    .venv/bin/python benchmarks/memory.py --lengths 32 64 128 --steps 3 --json benchmarks/results/memory.json
    .venv/bin/python benchmarks/memory.py --head fused materialized   # both loss paths, side by side
    .venv/bin/python benchmarks/memory.py --loss-only --head fused materialized --vocab 49152 151936 --lengths 64 256

Every completion is exactly the given length (``min_new_tokens`` = ``max_new_tokens``), so the lengths are what
differs. Each run is its own process, so its peak RSS (``VmHWM``) is that run's alone; it includes the model
load. Memory does not depend on the machine's load, so this needs no idle machine (unlike a timing).
``--head``: ``fused`` (the default, the LM heads run inside the loss chunk by chunk) and/or ``materialized``
(``--no-fused-head``: the logits of the whole batch exist). Prints peak RSS per length and the increase per 64
tokens per head. ``--loss-only`` measures the loss alone (heads, divergence, diagnostics, backward) on random
hidden states of SmolLM2's width, at each ``--vocab`` size: the peak above what the inputs took, which is what
"flat in the vocabulary" is about, with the fp32 training state for scale (weights,
gradients, AdamW's two moments and the EMA teacher: five copies of the parameters).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

CHILD = """
import json, math, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from selfdistill.training.loop import TrainConfig, train
from measure import vm_hwm_mib
spec = json.loads(sys.argv[1])
out = train(TrainConfig.from_mapping({**spec, "output": Path(spec["output"])}))
hwm = vm_hwm_mib()
from safetensors import safe_open
with safe_open(str(Path(out) / "model.safetensors"), "pt") as f:
    n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
print(json.dumps({"peak_rss_mib": hwm, "parameters": n_params}))
"""

LOSS_CHILD = """
import json, sys, torch
sys.path.insert(0, sys.argv[2])
from selfdistill.training import losses
from measure import vm_hwm_mib
spec = json.loads(sys.argv[1])
B, C, H, V = spec["batch_size"], spec["length"], 576, spec["vocab"]
torch.manual_seed(0)
student, teacher = torch.nn.Linear(H, V, bias=False), torch.nn.Linear(H, V, bias=False)
hidden = torch.randn(B, C, H, requires_grad=True)
teacher_hidden, tokens, mask = torch.randn(B, C, H), torch.randint(0, V, (B, C)), torch.ones(B, C)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak starts over from here
start = vm_hwm_mib()
with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["bf16"]):
    if spec["fused"]:
        loss = losses.head_forward_kl(hidden, student, teacher_hidden, teacher, tokens,
                                      losses.masked_mean_weights(mask), chunk_size=64)[0]
    else:  # what the training loop does with --no-fused-head
        with torch.no_grad():
            teacher_logits = teacher(teacher_hidden)
        loss_BT, _ = losses.distill_loss_and_stats(student(hidden), teacher_logits, tokens, chunk_size=64)
        loss = losses.masked_mean(loss_BT, mask)
loss.backward()
print(json.dumps({"peak_over_start_mib": vm_hwm_mib() - start}))
"""


@dataclass
class Args:
    """Peak memory of SDFT training against completion length: one fresh process per length."""

    model: str = "smollm2-135m-instruct"
    """The model to train."""
    data: str = "record_json"
    """A data file or registered task."""
    lengths: list[int] = field(default_factory=lambda: [32, 128])
    """Completion lengths, each exact (min_new_tokens = max_new_tokens)."""
    steps: int = 2
    """Training steps per run."""
    batch_size: int = 8
    """Prompts per step."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Training precision."""
    head: list[Literal["fused", "materialized"]] = field(default_factory=lambda: ["fused"])
    """fused: the LM heads inside the loss chunk by chunk; materialized: --no-fused-head, the whole batch's logits."""
    gradient_checkpointing: bool = False
    """Train with --gradient-checkpointing."""
    loss_only: bool = False
    """The loss alone on random hidden states."""
    vocab: list[int] = field(default_factory=lambda: [49152, 151936])
    """With --loss-only: the vocabulary sizes."""
    json: Path | None = None
    """Also write the results to this file."""


def settings(args: Args) -> dict:
    """The command line as the results file records it."""
    return dataclasses.asdict(args) | {"json": str(args.json)}


def run_child(script: str, spec: dict, what: str) -> dict:
    """``script`` in a fresh process (so its peak RSS is its own) given ``spec``; the JSON of its last line."""
    child = [sys.executable, "-c", script, json.dumps(spec), str(Path(__file__).resolve().parent)]
    done = subprocess.run(child, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"memory.py: {what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def loss_only(args: Args) -> None:
    rows = []
    for vocab in args.vocab:
        for length in args.lengths:
            for head in args.head:
                spec = {
                    "batch_size": args.batch_size,
                    "length": length,
                    "vocab": vocab,
                    "fused": head == "fused",
                    "bf16": args.precision != "fp32",
                }
                mib = run_child(LOSS_CHILD, spec, f"the loss at V={vocab}, {length} tokens ({head})")[
                    "peak_over_start_mib"
                ]
                rows.append({"vocab": vocab, "new_tokens": length, "head": head, "peak_over_start_mib": mib})
                print(
                    f"V {vocab:7d} | {length:4d} tokens x {args.batch_size} rows | {head:12s} | loss peak {mib:8.0f} "
                    f"MiB",
                    flush=True,
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings(args), "loss_only": rows}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.loss_only:
        return loss_only(args)

    from selfdistill.environment import cpu_model

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            for head in args.head:
                spec = {
                    "data": args.data,
                    "model": args.model,
                    "method": "sdft",
                    "output": str(Path(tmp) / f"{head}{length}"),
                    "max_steps": args.steps,
                    "batch_size": args.batch_size,
                    "max_new_tokens": length,
                    "min_new_tokens": length,
                    "precision": args.precision,
                    "save_every": 0,
                    "progress": False,
                    "fused_head": head == "fused",
                    "gradient_checkpointing": args.gradient_checkpointing,
                }
                print(
                    f"{length:5d} new tokens, {head} head: training {args.steps} steps in a fresh process ...",
                    flush=True,
                )
                row = run_child(CHILD, spec, f"the run at {length} tokens ({head} head)")
                results.append({"new_tokens": length, "head": head, **row})
                print(f"{length:5d} new tokens, {head} head: peak RSS {row['peak_rss_mib'] / 1024:.2f} GiB", flush=True)
    state_gib = 5 * 4 * results[0]["parameters"] / 2**30
    print(
        f"{cpu_model()} | {args.model} | batch {args.batch_size} | {args.precision} | {args.steps} steps"
        + (" | gradient checkpointing" if args.gradient_checkpointing else "")
    )
    print(f"fp32 training state (weights, grads, AdamW m and v, EMA teacher): {state_gib:.2f} GiB")
    for head in args.head:
        rows = [r for r in results if r["head"] == head]
        first, last = rows[0], rows[-1]
        if last["new_tokens"] != first["new_tokens"]:
            per64 = (last["peak_rss_mib"] - first["peak_rss_mib"]) / (last["new_tokens"] - first["new_tokens"]) * 64
            print(
                f"{head} head: peak RSS grows {per64:.0f} MiB per 64 completion tokens "
                f"({first['new_tokens']} -> {last['new_tokens']})"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"cpu": cpu_model(), "settings": settings(args), "runs": results}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
