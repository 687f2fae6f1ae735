"""The budgeted study: which method learns the most while what must not be lost stays within a forgetting budget?

    .venv/bin/python benchmarks/budget.py --jobs 2        # both seeds side by side, one core each; resumable
    .venv/bin/python benchmarks/budget.py run --seeds 0   # one seed in this process
    .venv/bin/python benchmarks/budget.py summary         # the tables and the frontier, from the results files alone

Everything below was fixed before any result was seen (docs/science.md, "The budgeted study"), and is not changed
after:

- **Sequence**: the first two stages of the forgetting benchmark's ``s1``, record_json → ticket_line: the seed's
  scenario, and the skill whose neighbours SFT wiped before it learned it (``../shared/notes/forgetting_budget.md``).
  12 steps a stage, batch 8, 48-token rollouts, fp32: the forgetting benchmark's training settings.
- **Methods**: SFT at lr 3e-5 and SDFT at lr 1e-4 (chat-turn teacher, no skipped tokens), the forgetting benchmark's
  tuned rates; SDFT at rollout temperature 0.5 with the authors' loss at T != 1 (both logits divided by T); and SFT
  with the replay anchor on prompts of the skills' own surface (``anchor_prompts``: near-prior questions about new
  sentences, none a guard item or a training prompt), weight 1, 8 anchor prompts a step.
- **The budget**: every 4 steps (points 0, 4, 8, 12) each run scores the stage's skill on its validation split and
  its guards (prior_probe, the near-prior tasks of the stages so far, the earlier stage's skill, the log-likelihood
  drift on fixed text), 12 selection items each (one item = 0.083, so a guard may lose one item); it keeps the best
  validation score whose guards lost at most D = 0.05, cumulative from the start model, and the next stage starts
  from the kept model.
- **The headline**, per method: ACC (the mean of both skills' test scores after the last stage) with the kept
  models, the test-side guard drop of the last stage's kept model (guard items never used to choose), and the
  near-prior and prior_probe drops on the test items; mean ± std over seeds 0 and 1, and the paired difference to
  SFT with its 95% t-interval (two seeds: wide).

Each seed is one `selfdistill continual` plan (``benchmarks/forgetting/budget_s1_seed<N>.yaml``, every method in it,
so each seed's report draws all methods on one frontier) run into ``benchmarks/results/budget/s1_seed<N>/``.
"""

from __future__ import annotations

import functools
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import common
import tyro
from common import RESULTS_ROOT, ROOT, Unit, Where, diff, md_table, pm

from selfdistill.continual import metrics
from selfdistill.continual.budget_report import plot_plan_frontier, stage_runs
from selfdistill.continual.frontier import best_within_budget, best_within_budget_table
from selfdistill.continual.results import Results
from selfdistill.stats import mean_std

COMMITTED = Where(RESULTS_ROOT / "budget", ROOT / "forgetting")
SKILLS = ("record_json", "ticket_line")
SEEDS = (0, 1)
STEPS = 12
BUDGET = 0.05
TRAIN = {
    "batch_size": 8,
    "max_new_tokens": 48,
    "save_every": 0,
    "precision": "fp32",
    "eval_every": 4,
    "forgetting_budget": BUDGET,
    "eval_limit": 12,
}
ANCHOR_FILE = "budget_anchor_s1.jsonl"
ANCHOR_PER_SKILL = 128
SDFT = {"method": "sdft", "teacher_template": "chat-turn", "skip_first_tokens": 0, "lr": 1.0e-4}
METHODS: dict[str, dict] = {
    "sft": {"method": "sft", "lr": 3.0e-5},
    "sdft": SDFT,
    "sdft-t0.5": {**SDFT, "temperature": 0.5, "loss_temperature": "rollout"},
    "sft+anchor": {"method": "sft", "lr": 3.0e-5, "anchor": ANCHOR_FILE, "anchor_weight": 1.0, "anchor_batch_size": 8},
}
EVAL = {"limit": 24, "seed": 0, "split": "test", "batch_size": 24, "prior": [{"task": "prior_probe"}]}


@dataclass
class Args:
    """The budgeted study: which method learns the most within a forgetting budget of 0.05?"""

    command: tyro.conf.Positional[Literal["all", "run", "summary"]] = "all"
    """all (run → summary, resumable), run, or summary (from the results files alone)."""
    seeds: list[int] = field(default_factory=lambda: list(SEEDS))
    """Which seeds to run."""
    jobs: int = 1
    """Run this many seeds side by side, each pinned to its own cores."""
    results: Path = COMMITTED.results
    """Results directory (default: the committed one); another directory gets its own plans."""
    smoke: bool = False
    """The pipeline, not the numbers: the tiny random model, one step a stage, two items a task."""
    side_by_side: int = 0
    """Set by --jobs on the units it starts: how many ran side by side (recorded with the wall time)."""
    cores: list[int] | None = None
    """Set by --jobs on the units it starts: the cores this unit runs on."""


def anchor_prompts(per_skill: int = ANCHOR_PER_SKILL) -> list[dict]:
    """Prompts on each skill's own surface for the replay anchor: each near-prior task's question about sentences
    drawn afresh (its own seeded draw, not the pool the guard items come from), none of them a skill prompt or a
    near-prior candidate, so the anchor never sees a guard item."""
    from selfdistill.evaluation.tasks import SKILL_TASKS, get_task

    rows = []
    for skill in SKILLS:
        near = get_task(f"near_{skill}", None)
        taken = "\n".join(e.question for split in SKILL_TASKS[skill](None).drawn for e in split).lower()
        pool = {e.question for e in near.candidates()}
        rng, seen = random.Random(f"{near.name}/anchor"), set()
        while len(seen) < per_skill:
            surface, prompt, _, _ = near.draw(rng)
            if surface.lower() not in taken and prompt not in pool:
                seen.add(prompt)
        rows += [{"prompt": prompt} for prompt in sorted(seen)]
    return rows


def write_anchor(plans: Path) -> Path:
    return common.write_if_changed(plans / ANCHOR_FILE, "".join(json.dumps(row) + "\n" for row in anchor_prompts()))


def seed_plan(seed: int, where: Where, smoke: bool) -> Path:
    write_anchor(where.plans)
    raw = {
        "model": "smollm2-135m-instruct",
        "output": str(where.results / f"s1_seed{seed}"),
        "seeds": [seed],
        "train": dict(TRAIN),
        "methods": {label: dict(overrides) for label, overrides in METHODS.items()},
        "stages": [{"task": skill, "steps": STEPS} for skill in SKILLS],
        "eval": {**EVAL, "near": [f"near_{skill}" for skill in SKILLS]},
    }
    if smoke:
        common.shrink_to_smoke(raw, [{"task": "prior_probe", "limit": 2}])
        raw["train"] |= {"eval_every": 1, "eval_limit": 2}
    comment = f"Budgeted study, seed {seed}: {' → '.join(SKILLS)} under a forgetting budget of {BUDGET}."
    return common.write_plan(where.plans, f"budget_s1_seed{seed}", raw, comment, "benchmarks/budget.py")


def unit_command(unit: Unit, jobs: int, cores: list[int], where: Where, smoke: bool) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "run", "--seeds", str(unit[1])]
    cmd += ["--side-by-side", str(jobs), "--results", str(where.results), "--cores", *map(str, cores)]
    return cmd + (["--smoke"] if smoke else [])


def cmd_run(args: Args, where: Where) -> None:
    if args.jobs > 1:
        units: list[Unit] = [(f"s1_seed{seed}", seed) for seed in args.seeds]
        command = functools.partial(unit_command, where=where, smoke=args.smoke)
        common.run_side_by_side(units, args.jobs, command, where.results)
        return
    how = {"side_by_side": args.side_by_side, "threads": common.torch_threads()} if args.side_by_side else {}
    for seed in args.seeds:
        start = time.perf_counter()
        if common.run_plan_file(seed_plan(seed, where, args.smoke)):
            common.log_time(f"s1 seed {seed}", start, where.results, **how)


# ---------------------------------------------------------------- summary


def finished(where: Where) -> list[Results]:
    return [Results.load(path.parent) for path in sorted(where.results.glob("s1_seed*/results.json"))]


def headline(all_results: list[Results]) -> tuple[list[list[str]], dict]:
    """Per method, over the seeds whose two stages finished: ACC, the last stage's kept test-side guard drop, the
    near-prior and prior_probe drops on the test items; and the paired differences to SFT."""
    values: dict[str, dict[str, dict[int, float]]] = {}
    for results in all_results:
        kept = best_within_budget(stage_runs(results, len(SKILLS))[0], BUDGET)
        for label, record in results.runs.items():
            s = metrics.summarize_method(results, label)
            if s["stages_done"] < len(SKILLS):
                continue
            row = values.setdefault(record.setting, {})
            test_drop = kept.get(record.setting, {}).get("test_mean_drop", {}).get(record.seed, float("nan"))
            for key, value in (
                ("acc", s["acc"]),
                ("test_guard_drop", test_drop),
                ("near_drop", s["near_drop"]),
                ("prior_drop", s["prior_drop"]),
            ):
                row.setdefault(key, {})[record.seed] = value
    keys = ("acc", "test_guard_drop", "near_drop", "prior_drop")
    rows = []
    for setting, row in values.items():
        cells = [setting, str(len(row["acc"]))]
        cells += [pm(mean_std(list(row[k].values()))) for k in keys]
        if setting != "sft" and "sft" in values:
            cells += [diff(metrics.paired_difference(row[k], values["sft"][k])) for k in ("acc", "test_guard_drop")]
        else:
            cells += ["—", "—"]
        rows.append(cells)
    return rows, values


LOOSER = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
"""Budgets for the post-hoc reading of stage 1 (not part of the pre-registered headline)."""


def looser_budgets(runs) -> str:
    """Stage 1 re-read at looser budgets from the points already recorded (post hoc): per method, the validation
    score the rule would have kept, mean over seeds. Stage 2 cannot be re-read: it started from stage 1's kept model."""
    rows = {}
    for budget in LOOSER:
        for setting, entry in best_within_budget(runs, budget).items():
            values = entry["selection"]
            rows.setdefault(setting, []).append(f"{sum(values.values()) / len(values):.2f}")
    return md_table(["method", *(f"D = {b:g}" for b in LOOSER)], [[k, *v] for k, v in rows.items()])


def cmd_summary(where: Where) -> None:
    all_results = finished(where)
    if not all_results:
        print("no runs yet")
        return
    text = "## The headline: ACC within a forgetting budget of 0.05 (test splits; mean ± std over seeds)\n\n"
    rows, values = headline(all_results)
    header = ["method", "seeds", "ACC", "test guard drop (kept, stage 2)", "near-prior drop", "prior_probe drop"]
    text += md_table([*header, "Δ ACC vs sft [95% CI]", "Δ test guard drop vs sft"], rows)
    panels = []
    for index, skill in enumerate(SKILLS, start=1):
        runs = [run for results in all_results for run in stage_runs(results, index)[0]]
        if runs:
            text += f"\n\n## Stage {index}: {skill}, chosen on the validation split\n\n"
            text += "\n".join(best_within_budget_table(runs, BUDGET))
            panels.append((f"stage {index}: {skill} (seeds pooled)", runs, BUDGET))
            if index == 1:
                text += "\n\nPost hoc, stage 1 at looser budgets (validation score kept, mean over seeds):\n\n"
                text += looser_budgets(runs)
    text += "\n\n" + common.machines_line(where.results) + "\n"
    print(text)
    (where.results / "summary.md").write_text(text)
    common.write_json(where.results / "summary.json", values)
    if panels:
        plot_plan_frontier(panels, where.results / "frontier.png")


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    common.pin_to(args.cores)
    if args.jobs < 1:
        common.usage_error("budget.py", f"--jobs must be at least 1, got {args.jobs}")
    where = COMMITTED.elsewhere(args.results)
    common.setup_logging()
    if args.command in ("all", "run"):
        cmd_run(args, where)
    if args.command == "summary" or (args.command == "all" and not args.side_by_side):
        cmd_summary(where)


if __name__ == "__main__":
    main()
