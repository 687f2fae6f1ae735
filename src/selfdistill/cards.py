"""Model cards: a README.md in the Hugging Face card format in every trained model directory (and OUTPUT/merged).

    write_data_info(out, cfg.data, examples)     # at the end of training: what the model was trained on
    render_card(out)                              # README.md from the files beside it, atomically
    add_scores(out, {"record_json": {...}})      # selfdistill eval / a continual stage: scores, then re-render

The card is rendered from files the run already keeps (train_config.json, metrics.jsonl) plus two small ones,
``training_data.json`` and ``scores.json``, so regenerating it when new scores arrive never loses what it said.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from selfdistill.config import DEFAULT_MODEL
from selfdistill.fileio import write_json_atomic, write_text_atomic
from selfdistill.markdown import table

DATA_INFO = "training_data.json"
ENVIRONMENT = "environment.json"
SCORES = "scores.json"
SELECTION = "selection.json"
CARD = "README.md"
HUB_IDS = {DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Model specs with a hub name (the embedded model is a GGUF copy of this one)."""
SETTINGS = (
    "method",
    "lr",
    "max_steps",
    "epochs",
    "batch_size",
    "grad_accum",
    "teacher",
    "ema_rate",
    "teacher_template",
    "teacher_temperature",
    "divergence",
    "support",
    "skip_first_tokens",
    "temperature",
    "max_new_tokens",
    "num_generations",
    "rollout",
    "tis",
    "precision",
    "seed",
    "lora",
    "lora_r",
    "lora_alpha",
    "anchor",
    "anchor_weight",
    "teacher_mix",
    "teacher_mix_until",
    "rollout_correction",
    "correction_k",
    "seqkd_filter",
)


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_data_info(out: Path, data: str, rows: int) -> None:
    path = Path(data)
    info = {"source": path.name if path.exists() else data, "rows": rows, "sha256": _sha256(path)}
    info["kind"] = "file" if path.is_file() else "dataset directory" if path.is_dir() else "registered task"
    write_json_atomic(out / DATA_INFO, info)


def add_scores(model_dir: Path, scores: dict[str, dict[str, Any]], source: str) -> None:
    """Merge ``{task: {"metric", "value", "n"}}`` into scores.json (``source`` says where they came from), then
    re-render the card. A directory that selfdistill did not train is left alone."""
    model_dir = Path(model_dir)
    if not (model_dir / "train_config.json").is_file():
        return
    path = model_dir / SCORES
    saved = json.loads(path.read_text()) if path.is_file() else {}
    for task, score in scores.items():
        saved[task] = {**score, "source": source}
    write_json_atomic(path, saved)
    render_card(model_dir)


def base_model(spec: str) -> str:
    """The hub name of what training started from: a known spec's, a selfdistill output's own base, or the spec."""
    if spec in HUB_IDS:
        return HUB_IDS[spec]
    config = Path(spec) / "train_config.json"
    if config.is_file():
        return base_model(str(json.loads(config.read_text()).get("model", spec)))
    return spec


def render_card(model_dir: Path, merged: bool = False) -> Path:
    """Write README.md from train_config.json, metrics.jsonl, training_data.json and scores.json."""
    model_dir = Path(model_dir)
    run_dir = model_dir.parent if merged else model_dir
    cfg = json.loads((run_dir / "train_config.json").read_text())
    data = json.loads((run_dir / DATA_INFO).read_text()) if (run_dir / DATA_INFO).is_file() else {}
    scores = json.loads((run_dir / SCORES).read_text()) if (run_dir / SCORES).is_file() else {}
    env = json.loads((run_dir / ENVIRONMENT).read_text()) if (run_dir / ENVIRONMENT).is_file() else {}
    rows = []
    if (run_dir / "metrics.jsonl").is_file():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        rows = [row for row in rows if "eval" not in row]  # evaluation points are not optimizer steps
    tags = ["selfdistill", cfg["method"], "continual-learning"] + (["lora"] if cfg.get("lora") else [])
    meta: dict[str, Any] = {"base_model": base_model(cfg["model"]), "library_name": "selfdistill", "tags": tags}
    if data.get("kind") == "registered task":
        meta["datasets"] = [data["source"]]
    what = (
        "the LoRA adapter merged into the base weights"
        if merged
        else ("a LoRA adapter (peft)" if cfg.get("lora") else "the full weights")
    )
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {run_dir.name}{' (merged)' if merged else ''}",
        "",
        f"Fine-tuned from `{meta['base_model']}` with [selfdistill](https://pypi.org/project/selfdistill/), method "
        f"**{cfg['method']}**. This directory holds {what}.",
        "",
        "## Settings",
        "",
        *table(["setting", "value"], [[k, str(cfg[k])] for k in SETTINGS if k in cfg]),
        "",
        "## Data",
        "",
    ]
    if data:
        lines.append(
            f"`{data['source']}` ({data['kind']}), {data['rows']} rows"
            + (f", sha256 `{data['sha256']}`" if data.get("sha256") else "")
            + "."
        )
    else:
        lines.append(f"`{cfg['data']}`.")
    if rows:
        seconds = sum(r.get("seconds_per_step", 0.0) for r in rows)
        lines += [
            "",
            "## Training",
            "",
            f"{len(rows)} optimizer steps, {seconds:.0f} s of step time in all; "
            f"final loss {rows[-1].get('loss', float('nan')):.4f}. Per-step logs: `metrics.jsonl`.",
        ]
    if env:
        where = env.get("gpu") or env.get("cpu")
        libs = ", ".join(f"{k} {env[k]}" for k in ("torch", "transformers", "peft", "vllm") if k in env)
        lines += [
            "",
            "## Compute",
            "",
            f"{env['precision']} on {env['device']} ({where}), {env['processes']} "
            f"process{'es' if env['processes'] != 1 else ''}; {libs}.",
        ]
    lines += _selection_lines(run_dir / SELECTION)
    lines += ["", "## Scores", ""]
    if scores:
        score_rows = [[t, s["metric"], f"{s['value']:.3f}", str(s["n"]), s["source"]] for t, s in scores.items()]
        lines += table(["task", "metric", "score", "items", "from"], score_rows)
    else:
        lines.append("None yet: `selfdistill eval --model DIR --tasks ...` adds them here.")
    path = model_dir / CARD
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _selection_lines(path: Path) -> list[str]:
    """The card's account of evaluation during training (``training/selection.py``): which step was kept and why."""
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    sel, kept, budget = doc["selection"], doc.get("kept"), doc.get("budget")
    unit = {0.0: "passages"}  # the drift guard's continuous score has no item resolution
    guards = ", ".join(f"{g['name']} ({g['n']} {unit.get(g['resolution'], 'items')})" for g in doc["guards"])
    lines = [
        "",
        "## Selection",
        "",
        f"Evaluated every {doc['eval_every']} steps on {sel['name']} ({sel['n']} selection items) and the guards "
        f"{guards}.",
    ]
    if kept is None:
        return [*lines, "", "No forgetting budget: these are the weights of the last step."]
    lines += ["", f"**Kept step {kept['step']}** within forgetting budget {budget:g}: {doc['rule']}"]
    if doc.get("stopped"):
        lines += ["", f"Training stopped at step {doc['stopped']['step']} ({doc['stopped']['reason']})."]
    test, test_base = doc.get("test") or {}, doc.get("test_base") or {}
    names = ["selection", *kept["guards"]]

    def cell(side: dict, name: str) -> str:
        value = side.get("selection") if name == "selection" else (side.get("guards") or {}).get(name)
        return f"{value:.3f}" if isinstance(value, int | float) else "-"

    label = {"selection": f"{sel['name']} (learned)"}
    rows = [[label.get(n, n), cell(doc["base"], n), cell(kept, n), cell(test_base, n), cell(test, n)] for n in names]
    lines += ["", *table(["score", "start (selection)", "kept (selection)", "start (test)", "kept (test)"], rows)]
    return lines
