"""TRL's side of vs_trl.py: the venv TRL runs in, and one run of TRL 1.16's SDFTTrainer set like for like with
selfdistill's side (step_harness.py), its step timed by a callback.

    python = ensure_trl_venv()                                    # in the orchestrator (the product venv)
    benchmarks/.venv-trl/bin/python benchmarks/trl_side.py SPEC.json OUT.json   # what run_child starts (internal)

TRL is installed once into ``benchmarks/.venv-trl`` (gitignored) with the product venv's torch, transformers,
accelerate and peft pinned, so it never enters selfdistill's dependencies. The child imports nothing of selfdistill
(its PYTHONPATH is cleared): only the standard library at the top and TRL inside ``run_trl``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from measure import vm_hwm_mib
from step_harness import EMA_RATE, LR, SKIP_FIRST_TOKENS

HERE = Path(__file__).resolve().parent
TRL_VENV = HERE / ".venv-trl"
TRL_VERSION = "1.16.0"
# Pinned in the TRL venv to the product venv's versions, so both sides run the same kernels and tokenizers.
SHARED = ("torch", "transformers", "accelerate", "peft", "huggingface_hub", "tokenizers", "safetensors", "numpy")


# ---------------------------------------------------------------- the TRL venv (run by the product venv)


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


# ---------------------------------------------------------------- one TRL run (run by the TRL venv)


def trl_config(spec: dict):
    """SDFTConfig set like selfdistill's side: fp32 on CPU, no gradient checkpointing, plain AdamW, full-vocabulary
    forward KL, 3 tokens skipped, EMA teacher synced every step, fixed-length completions, no prompt truncation."""
    from trl.experimental.sdft import SDFTConfig

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
    return args


def step_probe(steps: list[dict]):
    """A callback that appends each step's seconds, rollout seconds and completion tokens to ``steps``."""
    from transformers import TrainerCallback

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

    return StepProbe()


def run_trl(spec: dict) -> dict:
    """TRL's SDFTTrainer for ``spec["steps"]`` steps: per-step seconds, the init time and the peak RSS."""
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.experimental.sdft import SDFTTrainer

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    rows = json.loads(Path(spec["rows"]).read_text())
    t0 = time.perf_counter()
    trainer = SDFTTrainer(
        model=spec["model"],
        args=trl_config(spec),
        processing_class=AutoTokenizer.from_pretrained(spec["model"]),
        train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "privileged_context")} for r in rows]),
    )
    init_seconds = time.perf_counter() - t0
    _check_trl_prompts(trainer, rows)
    steps: list[dict] = []
    trainer.add_callback(step_probe(steps))  # after __init__, so after the EMA callback __init__ appended
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


if __name__ == "__main__":  # the child run_child starts: SPEC.json OUT.json
    spec_file, out_file = map(Path, sys.argv[1:3])
    out_file.write_text(json.dumps(run_trl(json.loads(spec_file.read_text()))))
