"""The SDFT step harness that vs_trl.py and vllm_threads.py share: one local model directory, selfdistill's side of
a run (fixed-length completions, the paper template, nothing saved), and one run per fresh process so that its peak
RSS is its own.

    run = run_child(Path(sys.executable), "selfdistill-fp32", spec, tmp)   # in the orchestrator
    python benchmarks/step_harness.py SPEC.json OUT.json                   # what run_child starts (internal)

The child's command line is a protocol between two processes of the harness, not a command a person types: two
paths, no options, and nothing imported at the top beyond the standard library, so any venv can run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from measure import vm_hwm_mib

HERE = Path(__file__).resolve().parent
VLLM_PYTHON = HERE.parent / ".venv-vllm" / "bin" / "python"  # `make setup-vllm`
SKIP_FIRST_TOKENS, EMA_RATE, LR = 3, 0.01, 1e-5  # both sides of vs_trl.py train with these
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}  # offline, no telemetry ping, no experimental-API warning


def prepare_model(model: str | Path | None, quick: bool, tmp: Path) -> Path:
    """One local HF directory every run loads: ``model``, tiny-random saved to ``tmp`` (quick), or the embedded
    model's cache."""
    from selfdistill.models import embedded_model_dir, load_tokenizer, tiny_random_model

    if model:
        return Path(model).expanduser().resolve()
    if not quick:
        return embedded_model_dir()
    out = tmp / "tiny-random"
    tok = load_tokenizer("tiny-random")
    tiny_random_model(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def run_selfdistill(spec: dict) -> dict:
    """selfdistill's SDFT for ``spec["steps"]`` steps: per-step seconds and phases, and the peak RSS of training."""
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
    cfg = TrainConfig.from_mapping(
        dict(
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
    )
    train_module.train(cfg)
    records = [json.loads(ln) for ln in (cfg.run.output / "metrics.jsonl").read_text().splitlines()]
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


def run_child(python: Path, side: str, spec: dict, tmp: Path, env_extra: dict[str, str] | None = None) -> dict:
    """One run of ``side`` (``trl``: trl_side.py; any other: selfdistill's side here) in a fresh process of
    ``python`` with ``env_extra`` added to its environment; its peak RSS comes from the kernel's accounting of that
    process alone."""
    spec_path, out_path, log_path = tmp / f"{side}.spec.json", tmp / f"{side}.out.json", tmp / f"{side}.log"
    spec_path.write_text(json.dumps(spec | {"workdir": str(tmp / f"work-{side}")}))
    out_path.unlink(missing_ok=True)
    env = os.environ | CHILD_ENV | (env_extra or {})
    if side == "trl":
        env.pop("PYTHONPATH", None)  # the TRL venv imports nothing of selfdistill
    script = HERE / ("trl_side.py" if side == "trl" else "step_harness.py")
    cmd = [str(python), str(script), str(spec_path), str(out_path)]
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


if __name__ == "__main__":  # the child run_child starts: SPEC.json OUT.json
    spec_file, out_file = map(Path, sys.argv[1:3])
    out_file.write_text(json.dumps(run_selfdistill(json.loads(spec_file.read_text()))))
