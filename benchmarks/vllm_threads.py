"""vLLM's in-process CPU engine beside the trainer: does idle OpenMP threads' spinning take the trainer's cores?

On 2 cores, `--rollout vllm` sampled faster than the hf engine but made every other phase of the step slower
(docs/performance.md: student forward + backward 4.19 s against 2.90 s). One candidate cause is OpenMP workers that
keep spinning after a parallel region and compete with the next phase's threads. ``OMP_WAIT_POLICY=PASSIVE`` makes
them sleep at once instead. This runs vs_trl.py's selfdistill SDFT step (step_harness.py: fp32, fixed-length
completions, the paper template) with each engine, with and without that setting, alternating the variants in every
round, and prints per-variant median seconds per step and per phase.

    .venv/bin/python benchmarks/vllm_threads.py            # the embedded model, 2 rounds x 6 steps (13 min, AMX Xeon)
    .venv/bin/python benchmarks/vllm_threads.py --quick    # tiny-random, 1 round x 3 steps

Needs `.venv-vllm` (`make setup-vllm`). Writes ``benchmarks/results/vllm_threads.json`` (resumes from it).
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tyro
from common import usage_error
from measure import git_commit, previous_runs, summarize_runs
from step_harness import VLLM_PYTHON, prepare_model, run_child

HERE = Path(__file__).resolve().parent
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {  # name → (rollout engine, extra environment)
    "hf": ("hf", {}),
    "hf, OMP_WAIT_POLICY=PASSIVE": ("hf", PASSIVE),
    "vllm": ("vllm", {}),
    "vllm, OMP_WAIT_POLICY=PASSIVE": ("vllm", PASSIVE),
}


def summarize(runs: list[dict]) -> dict[str, dict]:
    out = {}
    for name in VARIANTS:
        mine = [r for r in runs if r["variant"] == name]
        if mine:
            out[name] = summarize_runs(mine) | {"torch_threads_at_end": sorted({r["threads"] for r in mine})}
    return out


def report(result: dict) -> None:
    s = result["settings"]
    print(
        f"\n{result['cpu']} | {s['model_name']} | batch {s['batch_size']} x {s['new_tokens']} new tokens (fixed) | "
        f"{s['steps']} steps, first dropped | {result['rounds']} rounds | commit {result['commit']}"
    )
    for name, r in result["summary"].items():
        phases = " | ".join(f"{p} {v:.2f}" for p, v in r["phase_median_s"].items())
        rounds = " / ".join(f"{m:.2f}" for m in r["round_medians"])
        print(
            f"{name:32s} {r['median_s_per_step']:6.2f} s/step (rounds {rounds}) | {phases} | "
            f"peak {r['peak_rss_mib'] / 1024:.2f} GB | torch threads {r['torch_threads_at_end']}"
        )


@dataclass
class Args:
    """vLLM's in-process CPU engine beside the trainer, with and without OMP_WAIT_POLICY=PASSIVE."""

    quick: bool = False
    """tiny-random, 1 round x 3 steps: the harness runs."""
    rounds: int | None = None
    """Rounds, each running every variant once (None: 2, or 1 with --quick)."""
    steps: int | None = None
    """Steps per run, the first dropped (None: 6, or 3 with --quick)."""
    new_tokens: int | None = None
    """Completion length, fixed (None: 64, or 16 with --quick)."""
    batch_size: int = 8
    """Prompts per step."""
    threads: int = 2
    """torch threads in every run."""
    data: Path = HERE.parent / "examples" / "capitals.jsonl"
    """The demonstrations."""
    model: Path | None = None
    """A local HF model directory (default: the embedded model; quick: tiny-random)."""
    json: Path | None = None
    """Results file (default benchmarks/results/vllm_threads[_quick].json)."""
    fresh: bool = False
    """Ignore the JSON file's finished runs."""


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if not VLLM_PYTHON.is_file():
        usage_error("vllm_threads.py", f"{VLLM_PYTHON} is missing; build it with `make setup-vllm`")
    rounds = args.rounds or (1 if args.quick else 2)
    steps = args.steps or (3 if args.quick else 6)
    new_tokens = args.new_tokens or (16 if args.quick else 64)
    path = args.json or HERE / "results" / ("vllm_threads_quick.json" if args.quick else "vllm_threads.json")
    settings = {
        "model_name": str(args.model or ("tiny-random" if args.quick else "smollm2-135m-instruct")),
        "data": str(args.data),
        "steps": steps,
        "new_tokens": new_tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "variants": list(VARIANTS),
    }
    runs = previous_runs(path, settings, args.fresh)
    from selfdistill.environment import cpu_model

    result = {"cpu": cpu_model(), "commit": git_commit(HERE), "settings": settings, "rounds": rounds, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="vllm-threads-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = prepare_model(args.model, args.quick, tmp)
        spec = {
            "model": str(model_dir),
            "data": str(args.data),
            "steps": steps,
            "new_tokens": new_tokens,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "seed": 0,
            "precision": "fp32",
        }
        names = list(VARIANTS)
        for rnd in range(rounds):
            for name in names if rnd % 2 == 0 else names[::-1]:  # alternate, so drift hits every variant
                if any(r["round"] == rnd and r["variant"] == name for r in runs):
                    continue
                rollout, env = VARIANTS[name]
                side = "selfdistill-vllm" if rollout == "vllm" else "selfdistill-fp32"
                python = VLLM_PYTHON if rollout == "vllm" else Path(sys.executable)
                run = run_child(python, side, spec | {"rollout": rollout}, tmp, env) | {
                    "round": rnd,
                    "variant": name,
                }
                runs.append(run)
                print(
                    f"round {rnd + 1} {name}: s/step " + " ".join(f"{s['seconds']:.2f}" for s in run["steps"]),
                    flush=True,
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result, indent=1) + "\n")  # after every run: a rerun resumes here
    result["summary"] = summarize([r for r in runs if r["round"] < rounds])
    path.write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    print(f"written {path}")


if __name__ == "__main__":
    main()
