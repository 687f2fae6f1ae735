"""Choose the near-prior items: the candidates of each ``near_*`` task that the embedded base model answers right.

    .venv/bin/python benchmarks/select_near_prior.py                      # all near tasks, rewrites the file
    .venv/bin/python benchmarks/select_near_prior.py --tasks near_fact_doc --show-misses 10

Loads ``smollm2-135m-instruct``, generates greedily for every candidate with the project's evaluation engine
(``evaluate_tasks``, the task's own ``max_new_tokens`` and scorer), and writes the indices of the candidates scored
1.0, with each pool's size and fingerprint, to ``src/selfdistill/evaluation/tasks/near_prior.json`` (``--tasks``
replaces only those tasks' entries). Prints the CPU model, and kept/candidates per task.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import tyro

from selfdistill.environment import cpu_model
from selfdistill.evaluation.evaluate import evaluate_tasks
from selfdistill.evaluation.tasks.prior import NEAR_PRIOR_FILE, NEAR_TASKS, pool_fingerprint
from selfdistill.models import DEFAULT_MODEL, load_model

NearTask = Literal[tuple(sorted(NEAR_TASKS))]


@dataclass
class Args:
    """Choose the near-prior items: the candidates of each near task that the embedded base model answers right."""

    tasks: list[NearTask] = field(default_factory=lambda: sorted(NEAR_TASKS))
    """The near tasks to select (the others keep their entries)."""
    batch_size: int = 16
    """Prompts per generation batch."""
    output: Path = NEAR_PRIOR_FILE
    """The file the kept indices go to."""
    show_misses: int = 0
    """Print this many wrong answers per task."""


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"cpu: {cpu_model()}; device: {device}; torch threads: {torch.get_num_threads()}")
    model, tok = load_model(DEFAULT_MODEL, dtype=torch.float32, device=device)
    tasks = [NEAR_TASKS[name](Path("."), all_candidates=True) for name in args.tasks]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        preds = Path(tmp) / "predictions.jsonl"
        evaluate_tasks(model, tok, tasks, batch_size=args.batch_size, predictions_path=preds, progress=False)
        rows = [json.loads(line) for line in preds.read_text().splitlines()]
    print(f"generated {len(rows)} answers in {time.perf_counter() - start:.0f} s")

    old = json.loads(args.output.read_text()) if args.output.is_file() else {}
    entries = old.get("tasks", {})
    for task in tasks:
        own = [row for row in rows if row["task"] == task.name]
        kept = sorted(int(row["id"]) for row in own if row["scores"]["acc"] == 1.0)
        entries[task.name] = {
            "candidates": len(own),
            "fingerprint": pool_fingerprint(task.test_examples()),
            "kept": kept,
        }
        print(f"{task.name:<20} kept {len(kept):>3} of {len(own)}")
        for row in [r for r in own if r["scores"]["acc"] < 1.0][: args.show_misses]:
            print(f"    miss {row['id']:>3} gold={row['gold']['accept']} said={row['prediction']!r}")
    head = {"model": DEFAULT_MODEL, "decoding": "greedy, each task's max_new_tokens"}
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]  # one line per task: a readable diff
    lines += [' "tasks": {', ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(entries.items()))]
    args.output.write_text("{\n" + "\n".join(lines) + "\n }\n}\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
