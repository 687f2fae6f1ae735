"""Cross-check our multiple-choice engine against lm-evaluation-harness on the same items and the same weights.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lm_eval_crosscheck.py --limit 200 --output-dir /tmp/xcheck

For each task (arc_easy, hellaswag, piqa by default) the seeded ``--limit`` subset our ``evaluate`` picks is written
as a local JSON-lines file in the *raw* field layout of the task's Hugging Face dataset, and run through lm-eval's own
task config (its YAML, included by absolute path; only the dataset source is overridden), so lm-eval applies its own
prompt template, preprocessing and metrics. The model is the embedded SmolLM2-135M-Instruct cache directory
(safetensors), loaded by lm-eval's ``hf`` backend in float32. Prints acc/acc_norm side by side, the per-choice
log-likelihood gap, and exits 1 when any metric differs by more than ``--tolerance`` points.
Needs ``pip install lm-eval`` (the ``bench`` extra); runs offline.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import tyro  # noqa: E402

from selfdistill.evaluation.evaluate import evaluate_tasks, subset_indices  # noqa: E402
from selfdistill.evaluation.tasks.base import default_data_dir, task_dir  # noqa: E402
from selfdistill.evaluation.tasks.choice import CHOICE_TASKS  # noqa: E402
from selfdistill.models import embedded_model_dir, load_model  # noqa: E402


@dataclass
class CrossCheckConfig:
    """Run lm-eval and selfdistill on the same items and compare."""

    tasks: list[str] = field(default_factory=lambda: ["arc_easy", "hellaswag", "piqa"])
    """Tasks to compare (arc_easy, arc_challenge, hellaswag, piqa)."""
    limit: int = 200
    """Items per task: the seeded subset ``selfdistill eval --limit`` takes."""
    seed: int = 0
    """Seed of the subset."""
    batch_size: int = 16
    """Batch size for both engines."""
    output_dir: Path = Path("/tmp/lm_eval_crosscheck")
    """Where the item files, task YAMLs, predictions and summary.json go."""
    data_dir: Path | None = None
    """Evaluation data (default: $SELFDISTILL_DATA, else ../shared/data)."""
    tolerance: float = 1.0
    """Largest allowed |ours - lm-eval| per metric, in accuracy points."""


# ------------------------------------------------------------------------------------------ raw docs for lm-eval
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _arc_docs(path: Path) -> list[dict]:
    """ai2_arc layout: question, choices {text, label}, answerKey (lm-eval: "Question: {{question}}\\nAnswer:")."""
    docs = []
    for row in _jsonl(path):
        labels = [chr(ord("A") + k) for k in range(len(row["choices"]))]
        question = row["query"].removeprefix("Question: ")
        docs.append({"question": question, "choices": {"text": row["choices"], "label": labels}})
        docs[-1]["answerKey"] = labels[row["gold"]]
    return docs


def _piqa_docs(path: Path) -> list[dict]:
    """piqa layout: goal, sol1, sol2, label."""
    return [
        {"goal": r["query"].removeprefix("Question: ").removesuffix("\n"), "sol1": r["choices"][0]}
        | {"sol2": r["choices"][1], "label": r["gold"]}
        for r in _jsonl(path)
    ]


def _hellaswag_docs(path: Path) -> list[dict]:
    """Rowan/hellaswag layout (activity_label, ctx_a, ctx_b, endings, label), rebuilt from the text dump.

    The dump joins ``ctx_a + " " + ctx_b``; ctx_b (the unfinished sentence, lower-case) is recovered as the text after
    the last ". " when it starts lower-case, so lm-eval's own ``process_docs`` capitalizes and cleans it.
    """
    lines = path.read_text(encoding="utf-8").split("\n")
    docs = []
    for k in range(len(lines) // 6):
        first, gold, *endings = lines[6 * k : 6 * k + 6]
        label, _, ctx = first.partition(": ")
        head, sep, tail = ctx.rpartition(". ")
        ctx_a, ctx_b = (head + ".", tail) if sep and tail[:1].islower() else (ctx, "")
        docs.append({"activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": endings, "label": gold})
    return docs


# task -> (data file, raw-doc reader, lm-eval YAML inside lm_eval/tasks, split keys to clear)
SOURCES = {
    "arc_easy": ("arc_easy.jsonl", _arc_docs, "arc/arc_easy.yaml"),
    "arc_challenge": ("arc_challenge.jsonl", _arc_docs, "arc/arc_challenge.yaml"),
    "piqa": ("piqa.jsonl", _piqa_docs, "piqa/piqa.yaml"),
    "hellaswag": ("hellaswag_val_sub2000.txt", _hellaswag_docs, "hellaswag/hellaswag.yaml"),
}


def write_lm_eval_task(name: str, data_dir: Path, pick: list[int], out: Path) -> str:
    """Write the picked items and a YAML that includes lm-eval's own config for ``name``; return the task name."""
    import lm_eval

    filename, reader, yaml_rel = SOURCES[name]
    docs = reader(task_dir(data_dir, CHOICE_TASKS[name].dirname) / filename)
    items_path = out / f"{name}.items.jsonl"
    items_path.write_text("".join(json.dumps(docs[i]) + "\n" for i in pick))
    task = f"xcheck_{name}"
    base = Path(lm_eval.__file__).parent / "tasks" / yaml_rel
    yaml = (
        f"include: {base}\ntask: {task}\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {items_path}\n"
        "training_split: null\nvalidation_split: null\ntest_split: test\nfewshot_split: null\n"
    )
    (out / f"{task}.yaml").write_text(yaml)
    return task


# ---------------------------------------------------------------------------------------------------------- run
def run_lm_eval(tasks: list[str], cfg: CrossCheckConfig) -> tuple[dict, dict, float]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    out = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(embedded_model_dir()), "dtype": "float32", "device": "cpu"},
        tasks=tasks,
        batch_size=cfg.batch_size,
        task_manager=TaskManager(include_path=str(cfg.output_dir), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )
    return out["results"], out["samples"], time.perf_counter() - start


def main(cfg: CrossCheckConfig) -> int:
    data_dir = cfg.data_dir or default_data_dir()
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    print(f"torch threads: {torch.get_num_threads()}, model: {embedded_model_dir()}")

    ours_tasks = [CHOICE_TASKS[name](data_dir) for name in cfg.tasks]
    picks = {t.name: subset_indices(len(t.test_items()), cfg.limit, cfg.seed) for t in ours_tasks}
    lm_tasks = [write_lm_eval_task(name, data_dir, picks[name], cfg.output_dir) for name in cfg.tasks]

    model, tok = load_model("smollm2-135m-instruct")
    start = time.perf_counter()
    preds = cfg.output_dir / "ours.predictions.jsonl"
    ours = evaluate_tasks(
        model,
        tok,
        ours_tasks,
        limit=cfg.limit,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        predictions_path=preds,
    )
    ours_seconds = time.perf_counter() - start
    del model

    theirs, samples, theirs_seconds = run_lm_eval(lm_tasks, cfg)

    our_rows: dict[str, list[dict]] = {}
    for row in _jsonl(preds):
        our_rows.setdefault(row["task"], []).append(row)
    summary, ok = {}, True
    print(f"\n{'task':<10} {'metric':<9} {'ours':>7} {'lm-eval':>8} {'|diff| pts':>10} {'max |dlogp|':>12} {'n':>5}")
    for name, lm_task in zip(cfg.tasks, lm_tasks, strict=True):
        by_doc = {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in samples[lm_task]}
        gaps = [
            abs(a - b) for k, row in enumerate(our_rows[name]) for a, b in zip(row["logprobs"], by_doc[k], strict=True)
        ]
        for metric in ("acc", "acc_norm"):
            a, b = ours[name]["metrics"][metric], theirs[lm_task][f"{metric},none"]
            diff = 100 * abs(a - b)
            ok &= diff <= cfg.tolerance
            print(f"{name:<10} {metric:<9} {a:>7.4f} {b:>8.4f} {diff:>10.2f} {max(gaps):>12.2e} {len(by_doc):>5}")
            summary.setdefault(name, {})[metric] = {"ours": a, "lm_eval": b, "abs_diff_points": diff}
        summary[name]["max_abs_logprob_gap"] = max(gaps)
        summary[name]["n"] = len(by_doc)
    print(
        f"\nwall: ours {ours_seconds:.0f} s, lm-eval {theirs_seconds:.0f} s; agreement within {cfg.tolerance} pt: {ok}"
    )
    summary["seconds"] = {"ours": ours_seconds, "lm_eval": theirs_seconds}
    (cfg.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(tyro.cli(CrossCheckConfig)))
