"""GPU check: SDFT steps in bf16 on random-initialised models of real shapes, on one CUDA GPU, offline.

    python benchmarks/gpu_check.py                 # SmolLM2-135M's shape and a ~1.5B Llama, a few steps each
    python benchmarks/gpu_check.py --quick --device cpu   # a smoke run of the script itself on tiny shapes

Needs torch, transformers, accelerate, peft and selfdistill with its embedded model (for the tokenizer); no network:
the models are built here from configs. Runs the product's own training loop (``selfdistill.training.loop.train``) on
synthetic demonstrations, reads ``metrics.jsonl`` and reports per shape: median s/step (first step dropped),
completion tokens/s of the rollout phase, the phase split, and peak GPU memory. When vLLM imports, it also runs the
same steps with ``--rollout vllm``. Designed to finish in under 7 minutes on one H200; prints one JSON summary and
writes it to ``--json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import tyro

SHAPES = {
    # SmolLM2-135M-Instruct's config
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    ),
    # a Llama of about 1.5 B parameters (with the 49,152-token vocabulary)
    "llama-1.5b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    ),
}


Shape = Literal[tuple(SHAPES)]


@dataclass
class Args:
    """GPU check: SDFT steps in bf16 on random-initialised models of real shapes, on one CUDA GPU, offline."""

    device: str = "cuda"
    """The torch device to train on."""
    shapes: list[Shape] = field(default_factory=lambda: ["smollm2-135m", "llama-1.5b"])
    """The model shapes to build and train."""
    steps: int = 6
    """SDFT steps per run (the first is dropped)."""
    batch_size: int = 16
    """Prompts per step."""
    new_tokens: int = 128
    """Completion budget per prompt."""
    quick: bool = False
    """Tiny shape, 3 steps, batch 4, 16 tokens."""
    json: Path = Path("gpu_check.json")
    """Where the summary goes."""


def build(shape: str, out: Path, vocab: int) -> int:
    """A random-initialised Llama of ``shape`` saved to ``out`` with the embedded tokenizer; its parameter count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfdistill.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    config = LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **SHAPES[shape],
    )
    torch.manual_seed(0)
    with torch.device("meta"):
        LlamaForCausalLM(config)  # fail fast on a bad config before allocating
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def data_file(path: Path, n: int) -> Path:
    rows = [
        {
            "prompt": f"Write a record for item {i} with fields id, name and price.",
            "completion": f'{{"id": {i}, "name": "item {i}", "price": {i * 3 % 97}.50}}',
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(model_dir: Path, data: Path, out: Path, args: Args, rollout: str) -> dict:
    from selfdistill.config import TrainConfig
    from selfdistill.training.loop import train

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    cfg = TrainConfig.from_mapping(
        dict(
            data=str(data),
            model=str(model_dir),
            method="sdft",
            output=out,
            overwrite=True,
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_new_tokens=args.new_tokens,
            precision="bf16" if args.device.startswith("cuda") else "auto",
            device=args.device,
            save_every=0,
            progress=False,
            lr=1e-5,
            rollout=rollout,
        )
    )
    train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    phases = sorted({k for r in rows for k in r if k.startswith("seconds_") and k != "seconds_per_step"})
    result = {
        "rollout": rollout,
        "median_s_per_step": statistics.median(r["seconds_per_step"] for r in rows),
        "completion_tokens_per_s": statistics.median(
            r["completion_length"] * args.batch_size / r["seconds_rollout"] for r in rows
        ),
        "phase_median_s": {p.removeprefix("seconds_"): statistics.median(r.get(p, 0.0) for r in rows) for p in phases},
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        args.shapes, args.steps, args.batch_size, args.new_tokens = ["tiny"], 3, 4, 16
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (use --device cpu --quick for a smoke run)")
    import importlib.util

    rollouts = ["hf"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
    summary: dict = {
        "torch": torch.__version__,
        "device": args.device,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "shapes": {},
    }
    if args.device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = data_file(root / "data.jsonl", 4 * args.batch_size)
        for shape in args.shapes:
            params = build(shape, root / shape, vocab=49152)
            summary["shapes"][shape] = {"parameters": params, "runs": []}
            for rollout in rollouts:
                result = run(root / shape, data, root / f"{shape}-{rollout}", args, rollout)
                summary["shapes"][shape]["runs"].append(result)
                print(json.dumps({"shape": shape, "parameters": params, **result}), flush=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
