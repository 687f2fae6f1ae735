"""selfdistill's SDFT against TRL 1.16's SDFTTrainer: seconds per step, completion tokens/s and peak RSS, side by side.

    .venv/bin/python benchmarks/vs_trl.py            # the embedded model, 3 rounds x 6 steps (tens of minutes)
    .venv/bin/python benchmarks/vs_trl.py --quick    # tiny-random, a few minutes: proves the harness runs

TRL is installed once into its own venv (``benchmarks/.venv-trl``, gitignored) with the product venv's torch,
transformers, accelerate and peft pinned, so it never enters selfdistill's dependencies. Both libraries train on one
local model directory (the embedded model's cache, or tiny-random saved there with ``save_pretrained``), the same
data, batch and settings, each run in a fresh process (so peak RSS is the run's own), the sides alternating each
round and the first step of every run dropped. Every completion is exactly ``--new-tokens`` long on both sides
(``min_new_tokens`` = ``max_new_tokens``), so the two do the same work per step. TRL is set like for like:
fp32, no gradient checkpointing, plain AdamW, full-vocabulary forward KL, 3 tokens skipped, EMA teacher 0.01 synced
every step, one sample per prompt, no prompt truncation, the paper's teacher template (token-identical prompts are
checked). Its step is timed by a callback added after construction, so TRL's EMA update falls inside the step, as
selfdistill's ``seconds_per_step`` includes its own. Neither side saves the model: it is thrown away.
Results go to ``benchmarks/results/vs_trl[_quick].json``; a rerun with the same settings skips the runs already there.
TRL's side and its venv live in trl_side.py, selfdistill's side and the fresh-process runner in step_harness.py.
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
from trl_side import TRL_VERSION, ensure_trl_venv, shared_pins

HERE = Path(__file__).resolve().parent
SIDES = {
    "trl": "TRL 1.16 SDFTTrainer, fp32",
    "selfdistill-fp32": "selfdistill SDFT, --precision fp32",
    "selfdistill-auto": "selfdistill SDFT, default precision",
    "selfdistill-vllm": "selfdistill SDFT, fp32, --rollout vllm",
}


@dataclass
class Args:
    """selfdistill's SDFT against TRL 1.16's SDFTTrainer: seconds per step, completion tokens/s and peak RSS."""

    quick: bool = False
    """tiny-random, short runs: checks the harness, not speed."""
    rounds: int = 3
    """Rounds, each running every side once (>= 3 to report)."""
    steps: int | None = None
    """Steps per run, the first dropped (None: 6, or 3 with --quick)."""
    new_tokens: int | None = None
    """Completion length on both sides (None: 64, or 16 with --quick)."""
    batch_size: int = 8
    """Prompts per step on both sides."""
    threads: int = 0
    """torch threads in every run (0: torch's default)."""
    model: str | None = None
    """A local HF model directory instead of the embedded model."""
    data: Path = HERE.parent / "examples" / "capitals.jsonl"
    """The demonstrations both sides train on."""
    default_precision: bool = True
    """Also run selfdistill at its default precision (bf16 autocast where native)."""
    vllm: bool = False
    """Also run selfdistill fp32 with --rollout vllm, in .venv-vllm (make setup-vllm)."""
    fresh: bool = False
    """Ignore runs already in the results file."""
    json: Path | None = None
    """Results file (default benchmarks/results/vs_trl[_quick].json)."""


def prepare_rows(model_dir: Path, data: Path, out: Path) -> None:
    """TRL's columns for each example, with the prompt ids selfdistill builds, for TRL's side to check against."""
    from selfdistill.config import TrainConfig
    from selfdistill.data import read_examples
    from selfdistill.models import load_tokenizer
    from selfdistill.training.prompts import student_prompt_ids, teacher_prompt_ids

    tok = load_tokenizer(str(model_dir))
    budget = TrainConfig.from_mapping(dict(data=str(data))).teaching.max_teacher_prompt_tokens
    rows = []
    for ex in read_examples(str(data)):
        teacher_ids, cut = teacher_prompt_ids(tok, ex, "paper", max_tokens=budget)
        if ex.context or cut:  # TRL has one privileged text and cuts prompts from the left: not comparable
            sys.exit(f"{ex.source}: a context field or a truncated demonstration has no TRL equivalent")
        rows.append(
            {
                "prompt": list(ex.messages),
                "privileged_context": ex.completion,
                "student_ids": student_prompt_ids(tok, ex),
                "teacher_ids": teacher_ids,
            }
        )
    out.write_text(json.dumps(rows))


def summarize(runs: list[dict], sides: list[str]) -> dict:
    out: dict = {side: summarize_runs([r for r in runs if r["side"] == side]) for side in sides}
    trl, ours = out["trl"], out["selfdistill-fp32"]
    out["throughput_ratio"] = ours["completion_tokens_per_s"] / trl["completion_tokens_per_s"]
    out["peak_rss_ratio"] = ours["peak_rss_mib"] / trl["peak_rss_mib"]
    return out


def report(result: dict) -> None:
    s, summary = result["settings"], result["summary"]
    threads = "/".join(map(str, result["threads"]))
    print(
        f"\n{result['cpu']} | {threads} threads | {s['model_name']} | batch {s['batch_size']} x {s['new_tokens']} "
        f"new tokens (fixed) | {s['steps']} steps, first dropped | {result['rounds']} rounds"
    )
    print(f"{'run':52s} {'median s/step':>13s} {'tokens/s':>9s} {'peak RSS':>9s}  per round (s/step)")
    for side in s["sides"]:
        r, label = summary[side], SIDES[side]
        if side == "selfdistill-auto":
            label += " (bf16 autocast)" if result["bf16_autocast"] else " (= fp32: no native bf16 here)"
        print(
            f"{label:52s} {r['median_s_per_step']:13.3f} {r['completion_tokens_per_s']:9.1f} "
            f"{r['peak_rss_mib'] / 1024:7.2f} GB  " + " / ".join(f"{m:.3f}" for m in r["round_medians"])
        )
    print(f"throughput ratio {summary['throughput_ratio']:.2f} | peak RSS ratio {summary['peak_rss_ratio']:.2f}")
    for side in s["sides"]:
        r = summary[side]
        parts = [f"{p} {v:.3f} s ({v / r['median_s_per_step']:.0%})" for p, v in r["phase_median_s"].items()]
        print(f"{SIDES[side]} | median per phase: " + " | ".join(parts))


def settings_of(args: Args) -> dict:
    """What a results file's runs must share for a rerun to resume them (the defaults of --quick filled in)."""
    steps = args.steps or (3 if args.quick else 6)
    if steps < 2:
        usage_error("vs_trl.py", "--steps: at least 2 (the first step of every run is dropped)")
    if args.vllm and not VLLM_PYTHON.is_file():
        usage_error("vs_trl.py", f"--vllm: {VLLM_PYTHON} is missing; build it with `make setup-vllm`")
    sides = ["trl", "selfdistill-fp32"] + (["selfdistill-auto"] if args.default_precision else [])
    return {
        "model_name": args.model or ("tiny-random" if args.quick else "smollm2-135m-instruct"),
        "data": str(args.data),
        "steps": steps,
        "new_tokens": args.new_tokens or (16 if args.quick else 64),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "sides": sides + (["selfdistill-vllm"] if args.vllm else []),
        "pins": shared_pins(),
        "trl": TRL_VERSION,
    }


def base_spec(settings: dict, model_dir: Path, rows: Path) -> dict:
    """What every run of either side is given."""
    from selfdistill.config import TrainConfig
    from selfdistill.training.prompts import PAPER

    warmup_ratio = TrainConfig.from_mapping(dict(data=settings["data"])).optim.warmup_ratio
    return {
        "model": str(model_dir),
        "data": settings["data"],
        "rows": str(rows),
        **{k: settings[k] for k in ("steps", "new_tokens", "batch_size", "threads")},
        "seed": 0,
        "paper_template": PAPER.replace("{demonstration}", "{privileged_context}"),
        "warmup_steps": int(warmup_ratio * settings["steps"]),  # selfdistill's rounding
    }


def run_rounds(result: dict, rounds: int, spec: dict, python_trl: Path, tmp: Path, path: Path) -> None:
    """Every side once a round, in alternating order (so drift in load hits every side), skipping the runs
    ``result`` already holds; ``path`` is rewritten after every run, so a rerun resumes there."""
    sides, runs = result["settings"]["sides"], result["runs"]
    for rnd in range(rounds):
        for side in sides if rnd % 2 == 0 else sides[::-1]:
            if any(r["round"] == rnd and r["side"] == side for r in runs):
                continue
            precision = "auto" if side == "selfdistill-auto" else "fp32"
            rollout = "vllm" if side == "selfdistill-vllm" else "hf"
            python = {"trl": python_trl, "selfdistill-vllm": VLLM_PYTHON}.get(side, Path(sys.executable))
            run = run_child(python, side, spec | {"precision": precision, "rollout": rollout}, tmp) | {"round": rnd}
            runs.append(run)
            print(
                f"round {rnd + 1} {side}: s/step "
                + " ".join(f"{s['seconds']:.3f}" for s in run["steps"])
                + f" (first dropped) | peak RSS {run['peak_rss_mib'] / 1024:.2f} GB",
                flush=True,
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")


def orchestrate(args: Args) -> None:
    import torch

    from selfdistill.environment import cpu_model
    from selfdistill.training.setup import uses_bf16

    settings = settings_of(args)
    path = args.json or HERE / "results" / ("vs_trl_quick.json" if args.quick else "vs_trl.json")
    result = {
        "cpu": cpu_model(),
        "commit": git_commit(HERE),
        "settings": settings,
        "rounds": args.rounds,
        "bf16_autocast": uses_bf16("auto", torch.device("cpu")),
        "runs": previous_runs(path, settings, args.fresh),
    }
    python_trl = ensure_trl_venv()
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = prepare_model(args.model, args.quick, tmp)
        prepare_rows(model_dir, args.data, tmp / "rows.json")
        run_rounds(result, args.rounds, base_spec(settings, model_dir, tmp / "rows.json"), python_trl, tmp, path)
    runs = result["runs"]
    result["threads"] = sorted({r["threads"] for r in runs})
    result["summary"] = summarize([r for r in runs if r["round"] < args.rounds], settings["sides"])
    path.write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    if args.rounds < 3:
        print(f"only {args.rounds} rounds: fewer than the 3 a reported comparison needs")
    print(f"written {path}")


def main(argv: list[str] | None = None) -> None:
    orchestrate(tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    main()
