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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_VENV = HERE / ".venv-trl"
TRL_VERSION = "1.16.0"
# Pinned in the TRL venv to the product venv's versions, so both sides run the same kernels and tokenizers.
SHARED = ("torch", "transformers", "accelerate", "peft", "huggingface_hub", "tokenizers", "safetensors", "numpy")
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}  # offline, no telemetry ping, no experimental-API warning
SIDES = {
    "trl": "TRL 1.16 SDFTTrainer, fp32",
    "selfdistill-fp32": "selfdistill SDFT, --precision fp32",
    "selfdistill-auto": "selfdistill SDFT, default precision",
    "selfdistill-vllm": "selfdistill SDFT, fp32, --rollout vllm",
}
VLLM_PYTHON = HERE.parent / ".venv-vllm" / "bin" / "python"  # `make setup-vllm`
SKIP_FIRST_TOKENS, EMA_RATE, LR = 3, 0.01, 1e-5
PHASES = ("rollout", "teacher", "student", "tis", "diagnostics", "optimizer", "ema", "sync")  # a step's order


def vm_hwm_mib() -> float:
    """This process's peak resident set so far (Linux ``VmHWM``)."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


# ---------------------------------------------------------------- the TRL venv


def shared_pins() -> list[str]:
    """``name==version`` of the product venv's (this interpreter's) packages the TRL venv must match."""
    pins = []
    for name in SHARED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{name}=={metadata.version(name)}")
    return pins


def ensure_trl_venv() -> Path:
    """The TRL venv's python, created or brought to the current pins first (a no-op when it already matches)."""
    python, marker = TRL_VENV / "bin" / "python", TRL_VENV / "vs_trl-pins.txt"
    pins = [*shared_pins(), f"trl=={TRL_VERSION}"]
    if python.exists() and marker.is_file() and marker.read_text().split() == pins:
        return python
    print(f"installing {' '.join(pins)} into {TRL_VENV} (once)", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    torch_pin = next(p for p in pins if p.startswith("torch=="))
    # torch alone and first, at the product's exact build: an unpinned resolve could pull gigabytes of CUDA wheels.
    subprocess.run([*pip, torch_pin], check=True)
    subprocess.run([*pip, *pins], check=True)
    marker.write_text("\n".join(pins) + "\n")
    return python


# ---------------------------------------------------------------- model and data, shared by both sides


def prepare_model(args: argparse.Namespace, tmp: Path) -> Path:
    """One local HF directory both sides load: ``--model``, tiny-random saved to ``tmp`` (quick), or the cache."""
    from selfdistill.models import embedded_model_dir, load_tokenizer, tiny_random_model

    if args.model:
        return Path(args.model).expanduser().resolve()
    if not args.quick:
        return embedded_model_dir()
    out = tmp / "tiny-random"
    tok = load_tokenizer("tiny-random")
    tiny_random_model(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def prepare_rows(model_dir: Path, data: Path, out: Path) -> None:
    """TRL's columns for each example, with the prompt ids selfdistill builds, for TRL's side to check against."""
    from selfdistill.config import TrainConfig
    from selfdistill.data import read_examples
    from selfdistill.models import load_tokenizer
    from selfdistill.training.prompts import student_prompt_ids, teacher_prompt_ids

    tok = load_tokenizer(str(model_dir))
    budget = TrainConfig(data=str(data)).max_teacher_prompt_tokens
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


# ---------------------------------------------------------------- TRL's side (runs in the TRL venv)


def run_trl(spec: dict) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    rows = json.loads(Path(spec["rows"]).read_text())
    n = spec["new_tokens"]
    args = SDFTConfig(
        output_dir=spec["workdir"],
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        num_generations=1,
        max_completion_length=n,
        max_prompt_length=None,
        generation_kwargs={"min_new_tokens": n},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        distillation_mode="full_logits",
        distillation_alpha=0.0,
        num_loss_tokens_to_skip=SKIP_FIRST_TOKENS,
        teacher_model_kind="ema",
        teacher_update_rate=EMA_RATE,
        teacher_sync_steps=1,
        teacher_prompt_template=spec["paper_template"],
        use_vllm=False,
        model_init_kwargs={"dtype": "float32"},
        bf16=False,
        fp16=False,
        use_cpu=True,
        activation_checkpointing=False,
        optim="adamw_torch",
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=spec["warmup_steps"],
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=spec["seed"],
    )
    assert not args.gradient_checkpointing and not args.bf16, "TRL's CPU-hostile defaults must stay off"
    t0 = time.perf_counter()
    trainer = SDFTTrainer(
        model=spec["model"],
        args=args,
        processing_class=AutoTokenizer.from_pretrained(spec["model"]),
        train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "privileged_context")} for r in rows]),
    )
    init_seconds = time.perf_counter() - t0
    _check_trl_prompts(trainer, rows)
    steps: list[dict] = []

    class StepProbe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.row, self.t0 = {}, time.perf_counter()

        def on_generation_prompts_selected(self, **kwargs):  # SDFTTrainer's own event, just before generate
            self.t_rollout = time.perf_counter()

        def on_self_distillation_batch_prepared(self, completion_ids=None, teacher_attention_mask=None, **kwargs):
            self.row["seconds_rollout"] = time.perf_counter() - self.t_rollout
            self.row["completion_tokens"] = int(teacher_attention_mask[:, -completion_ids.shape[1] :].sum())

        def on_step_end(self, args, state, control, **kwargs):
            steps.append({"step": state.global_step, "seconds": time.perf_counter() - self.t0, **self.row})

    trainer.add_callback(StepProbe())  # after __init__, so after the EMA callback __init__ appended
    order = [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert order.index("SyncTeacherModelCallback") < order.index("StepProbe"), order
    trainer.train()
    return {
        "init_seconds": init_seconds,
        "steps": steps,
        "peak_rss_train_mib": vm_hwm_mib(),
        "threads": torch.get_num_threads(),
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }


def _check_trl_prompts(trainer, rows: list[dict]) -> None:
    """TRL's student and teacher prompt ids, built by its own code, must equal selfdistill's token for token."""
    prompts, demos = [r["prompt"] for r in rows], [r["privileged_context"] for r in rows]
    student = trainer._tokenize_prompts(prompts)
    teacher = trainer._tokenize_prompts(trainer.teacher_context_builder.select_generation_prompts(prompts, demos))
    for i, r in enumerate(rows):
        if list(student[i]) != r["student_ids"] or list(teacher[i]) != r["teacher_ids"]:
            sys.exit(f"row {i}: TRL's prompt ids differ from selfdistill's: the runs would not be like for like")


# ---------------------------------------------------------------- selfdistill's side (runs in the product venv)


def run_selfdistill(spec: dict) -> dict:
    import torch

    from selfdistill.config import TrainConfig
    from selfdistill.training import loop as train_module
    from selfdistill.training.setup import uses_bf16

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    n, batch = spec["new_tokens"], spec["batch_size"]
    # The model is thrown away (TRL's side saves nothing either); the peak is read where the final save would be.
    peak: list[float] = []
    train_module.save_checkpoint = train_module.save_final = lambda *a, **k: peak.append(vm_hwm_mib())
    cfg = TrainConfig(
        data=spec["data"],
        model=spec["model"],
        method="sdft",
        output=Path(spec["workdir"]) / "run",
        overwrite=True,
        max_steps=spec["steps"],
        batch_size=batch,
        max_new_tokens=n,
        precision=spec["precision"],
        teacher="ema",
        min_new_tokens=n,
        ema_rate=EMA_RATE,
        teacher_template="paper",
        skip_first_tokens=SKIP_FIRST_TOKENS,
        temperature=1.0,
        lr=LR,
        save_every=0,
        progress=False,
        seed=spec["seed"],
        rollout=spec.get("rollout", "hf"),
    )
    train_module.train(cfg)
    records = [json.loads(ln) for ln in (cfg.output / "metrics.jsonl").read_text().splitlines()]
    if any(r["completion_length"] != n for r in records):
        sys.exit(f"selfdistill sampled completions of other lengths than {n}: fixed length did not take")
    steps = [
        {
            "step": r["step"],
            "seconds": r["seconds_per_step"],
            "completion_tokens": n * batch,
            **{k: v for k, v in r.items() if k.startswith("seconds_") and k != "seconds_per_step"},
        }
        for r in records
    ]
    return {
        "steps": steps,
        "peak_rss_train_mib": peak[0],
        "threads": torch.get_num_threads(),
        "bf16_autocast": uses_bf16(spec["precision"], torch.device("cpu")),
        "versions": {"selfdistill": metadata.version("selfdistill"), "torch": torch.__version__},
    }


# ---------------------------------------------------------------- the orchestrator


def run_child(python: Path, side: str, spec: dict, tmp: Path, env_extra: dict[str, str] | None = None) -> dict:
    """One run in a fresh process (``env_extra`` added to its environment); its peak RSS comes from the kernel's
    accounting of that process alone."""
    spec_path, out_path, log_path = tmp / f"{side}.spec.json", tmp / f"{side}.out.json", tmp / f"{side}.log"
    spec_path.write_text(json.dumps(spec | {"workdir": str(tmp / f"work-{side}")}))
    out_path.unlink(missing_ok=True)
    env = os.environ | CHILD_ENV | (env_extra or {})
    if side == "trl":
        env.pop("PYTHONPATH", None)  # the TRL venv imports nothing of selfdistill
    cmd = [str(python), __file__, "--child", side, "--spec", str(spec_path), "--out", str(out_path)]
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not out_path.is_file():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        sys.exit(f"{side} run failed (exit {proc.returncode}); last lines of its log:\n{tail}")
    wall, peak_mib = time.perf_counter() - t0, usage.ru_maxrss / 1024  # ru_maxrss: KiB on Linux
    return json.loads(out_path.read_text()) | {"side": side, "wall_seconds": wall, "peak_rss_mib": peak_mib}


def summarize_runs(mine: list[dict]) -> dict:
    """Medians over the steps of several runs of one kind, each run's first step dropped as warm-up."""
    kept = [s for r in mine for s in r["steps"][1:]]
    seen = {k.removeprefix("seconds_") for s in kept for k in s if k.startswith("seconds_")}
    phases = [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))
    return {
        "median_s_per_step": statistics.median(s["seconds"] for s in kept),
        "round_medians": [statistics.median(s["seconds"] for s in r["steps"][1:]) for r in mine],
        "completion_tokens_per_s": sum(s["completion_tokens"] for s in kept) / sum(s["seconds"] for s in kept),
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in mine),
        "round_peak_rss_mib": [r["peak_rss_mib"] for r in mine],
        "phase_median_s": {p: statistics.median(s.get(f"seconds_{p}", 0.0) for s in kept) for p in phases},
        "steps_kept": len(kept),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny-random, short runs: checks the harness, not speed")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every side once (>= 3 to report)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run, the first dropped (6; quick 3)")
    parser.add_argument("--new-tokens", type=int, default=None, help="completion length on both sides (64; quick 16)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every run (0: torch's default)")
    parser.add_argument("--model", default=None, help="a local HF model directory instead of the embedded model")
    parser.add_argument("--data", type=Path, default=HERE.parent / "examples" / "capitals.jsonl")
    parser.add_argument(
        "--default-precision",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run selfdistill at its default precision (bf16 autocast where native)",
    )
    parser.add_argument(
        "--vllm",
        action="store_true",
        help="also run selfdistill fp32 with --rollout vllm, in .venv-vllm (make setup-vllm)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in the results file")
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/results/vs_trl[_quick].json")
    parser.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.spec.read_text())
        result = run_trl(spec) if args.child == "trl" else run_selfdistill(spec)
        args.out.write_text(json.dumps(result))
        return
    orchestrate(args)


def previous_runs(path: Path, settings: dict, fresh: bool) -> list[dict]:
    """The runs a results file already holds for the same settings (so a rerun resumes), or none."""
    old = {} if fresh or not path.is_file() else json.loads(path.read_text())
    if old and old.get("settings") != settings:
        print(f"{path}: written with other settings; starting over")
        return []
    return old.get("runs", [])


def orchestrate(args: argparse.Namespace) -> None:
    import torch

    from selfdistill.config import TrainConfig
    from selfdistill.training.prompts import PAPER
    from selfdistill.training.setup import uses_bf16

    steps = args.steps or (3 if args.quick else 6)
    new_tokens = args.new_tokens or (16 if args.quick else 64)
    if steps < 2:
        sys.exit("--steps: at least 2 (the first step of every run is dropped)")
    path = args.json or HERE / "results" / ("vs_trl_quick.json" if args.quick else "vs_trl.json")
    sides = ["trl", "selfdistill-fp32"] + (["selfdistill-auto"] if args.default_precision else [])
    if args.vllm:
        if not VLLM_PYTHON.is_file():
            sys.exit(f"--vllm: {VLLM_PYTHON} is missing; build it with `make setup-vllm`")
        sides.append("selfdistill-vllm")
    settings = {
        "model_name": args.model or ("tiny-random" if args.quick else "smollm2-135m-instruct"),
        "data": str(args.data),
        "steps": steps,
        "new_tokens": new_tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "sides": sides,
        "pins": shared_pins(),
        "trl": TRL_VERSION,
    }
    runs = previous_runs(path, settings, args.fresh)
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    from selfdistill.environment import cpu_model  # the orchestrator runs in the product venv

    result = {
        "cpu": cpu_model(),
        "commit": commit.stdout.strip(),
        "settings": settings,
        "rounds": args.rounds,
        "bf16_autocast": uses_bf16("auto", torch.device("cpu")),
        "runs": runs,
    }
    python_trl = ensure_trl_venv()
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = prepare_model(args, tmp)
        prepare_rows(model_dir, args.data, tmp / "rows.json")
        base_spec = {
            "model": str(model_dir),
            "data": str(args.data),
            "rows": str(tmp / "rows.json"),
            "steps": steps,
            "new_tokens": new_tokens,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "seed": 0,
            "paper_template": PAPER.replace("{demonstration}", "{privileged_context}"),
            "warmup_steps": int(TrainConfig(data=str(args.data)).warmup_ratio * steps),  # selfdistill's rounding
        }
        for rnd in range(args.rounds):
            for side in sides if rnd % 2 == 0 else sides[::-1]:  # alternate, so drift in load hits every side
                if any(r["round"] == rnd and r["side"] == side for r in runs):
                    continue
                spec = base_spec | {
                    "precision": "auto" if side == "selfdistill-auto" else "fp32",
                    "rollout": "vllm" if side == "selfdistill-vllm" else "hf",
                }
                python = {"trl": python_trl, "selfdistill-vllm": VLLM_PYTHON}.get(side, Path(sys.executable))
                run = run_child(python, side, spec, tmp) | {"round": rnd}
                runs.append(run)
                print(
                    f"round {rnd + 1} {side}: s/step "
                    + " ".join(f"{s['seconds']:.3f}" for s in run["steps"])
                    + f" (first dropped) | peak RSS {run['peak_rss_mib'] / 1024:.2f} GB",
                    flush=True,
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result, indent=1) + "\n")  # after every run: a rerun resumes here
    result["threads"] = sorted({r["threads"] for r in runs})
    result["summary"] = summarize([r for r in runs if r["round"] < args.rounds], sides)
    path.write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    if args.rounds < 3:
        print(f"only {args.rounds} rounds: fewer than the 3 a reported comparison needs")
    print(f"written {path}")


if __name__ == "__main__":
    main()
