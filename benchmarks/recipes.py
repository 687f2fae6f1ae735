"""The recipe screen: which self-distillation recipe learns the skills while keeping what the model already did,
chosen on validation splits before any of the recipes' test numbers is read.

    .venv/bin/python benchmarks/recipes.py screen      # resumable; writes benchmarks/results/recipes/
    .venv/bin/python benchmarks/recipes.py summary     # the table and the chosen recipe, from the results alone
    .venv/bin/python benchmarks/recipes.py screen --smoke   # every setting for one step on tiny-random (minutes)
    .venv/bin/python benchmarks/recipes.py final       # after the screen: the test-split comparison, resumable
    .venv/bin/python benchmarks/recipes.py final --smoke    # its pipeline on tiny-random, with a stand-in recipe
    .venv/bin/python benchmarks/recipes.py diagnostics # sdft vs the recipe: training diagnostics per stage
    .venv/bin/python benchmarks/recipes.py pilot --seeds 0   # two predictions of the diagnostics, validation splits

Everything below was fixed before any result of these settings was seen:

- **Sequences**: ``s1`` and ``s2`` of the forgetting benchmark (``forgetting.SEQUENCES``), all three stages, the
  stage tasks scored on their *validation* splits, seed 0, ``forgetting.STEPS`` steps of batch 8 per stage.
- **Evaluation after every stage**: the stage tasks and the sequence's near-prior tasks (``forgetting.LIMIT`` items
  each) and prior_probe. The log-likelihood prior tasks and IFEval are left to the final comparison: in the
  benchmark's first runs they barely moved for any method, and they are most of an evaluation's time.
- **Settings** (``SETTINGS``): each method's learning rate is the benchmark's tuned one (``chosen_lr.json``); the
  anchor is the ``general_chat`` pool at weight 1 with 8 prompts a step; corrected rollouts keep the teacher's top
  10; the warm start gives half the rollouts to the teacher at first, falling to none at half the steps.
- **Choice**: among the self-distillation settings (all but ``sft`` and ``sft+anchor``), the highest mean over the
  screen's sequences of the benchmark's tuning objective, ``ACC + (near-prior average + prior average) / 2`` at the
  end; a tie goes to the setting with fewer parts. The final comparison then runs the forgetting benchmark's four
  sequences on their test splits, three seeds: sft, sft+anchor, sdft, seqkd+filter and the chosen recipe.
- **Final comparison** (``final``): each sequence's plan is the forgetting benchmark's (same lr, steps, seeds,
  evaluation subsets and prior suite); sft and sdft are that benchmark's own finished runs, read from
  ``benchmarks/results/forgetting/``, and only the new settings run, into ``benchmarks/results/recipes/final_<seq>``.
  Every difference is paired by seed against SFT. **The goal**, per sequence: the recipe's mean prior drop and mean
  near-prior drop are each at most a quarter of SFT's, at a mean ACC at least SFT's; it is met when that holds on at
  least three of the four sequences.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import common
import forgetting
import recipe_analysis as analysis
import tyro
from common import diff, md_table, pm, read_json, write_json
from forgetting import SequenceName
from recipe_analysis import FINAL_NEW, FORGETTING, RECIPES, REUSED, VALIDATION_PRIOR

from selfdistill.continual.metrics import aggregate, mean_std, paired_difference, summarize_method
from selfdistill.continual.results import load_results

RESULTS = RECIPES.results
SCREEN_SEQUENCES = ("s1", "s2")
ANCHOR = {"anchor": "general_chat", "anchor_weight": 1.0, "anchor_batch_size": 8}
CORRECTED = {"rollout_correction": "topk", "correction_k": 10}
MIX = {"teacher_mix": 0.5, "teacher_mix_until": 0.5}
SETTINGS: dict[str, tuple[str, dict]] = {
    "sft": ("sft", {}),
    "sft+anchor": ("sft", ANCHOR),
    "sdft": ("sdft", {}),
    "sdft+anchor": ("sdft", ANCHOR),
    "sdft+corrected": ("sdft", CORRECTED),
    "sdft+mix": ("sdft", MIX),
    "sdft+anchor+corrected": ("sdft", {**ANCHOR, **CORRECTED}),
    "seqkd+filter": ("seqkd", {"seqkd_filter": True}),
}
BASELINES = ("sft", "sft+anchor")
SMOKE_RECIPE = "sdft+anchor"  # any recipe will do to exercise the pipeline; the smoke numbers mean nothing
GOAL_RATIO = 0.25
GOAL_SEQUENCES = 3
KEYS = ("acc", "bwt", "prior_drop", "near_drop")
HEADER = ["ACC", "BWT", "prior drop", "near-prior drop"]
Command = Literal["screen", "summary", "final", "final-summary", "diagnostics", "pilot", "pilot-summary"]


@dataclass
class Args:
    """The recipe screen: which self-distillation recipe learns the skills while keeping what the model already
    did, chosen on validation splits before any of the recipes' test numbers is read."""

    command: tyro.conf.Positional[Command]
    """screen, summary, final, final-summary, diagnostics, pilot or pilot-summary."""
    smoke: bool = False
    """One step of every setting on tiny-random."""
    seeds: list[int] = field(default_factory=lambda: list(forgetting.SEEDS))
    """final, pilot: which seeds."""
    pilots: list[Literal["rollout", "teacher"]] = field(default_factory=lambda: list(analysis.PILOTS))
    """pilot: which (rollout: the rollout temperature; teacher: the teacher temperature)."""
    sequences: list[SequenceName] = field(default_factory=lambda: list(forgetting.SEQUENCES))
    """final: which sequences."""


def settings(lrs: dict[str, float]) -> dict[str, dict]:
    return {
        label: {"method": method, **forgetting.METHODS[method], "lr": lrs[method], **extra}
        for label, (method, extra) in SETTINGS.items()
    }


def screen_plan(name: str, lrs: dict[str, float], smoke: bool) -> Path:
    out = RESULTS / (f"smoke_{name}" if smoke else f"screen_{name}")
    raw = forgetting.plan_dict(
        out, forgetting.SEQUENCES[name], settings(lrs), [0], "validation", VALIDATION_PRIOR, forgetting.LIMIT
    )
    if smoke:
        common.shrink_to_smoke(raw, VALIDATION_PRIOR)
    comment = f"Recipe screen on {name} ({' → '.join(forgetting.SEQUENCES[name])}), validation splits, seed 0."
    return common.write_plan(RECIPES.plans, f"recipes_{'smoke_' if smoke else ''}{name}", raw, comment)


def final_settings(recipe: str, smoke: bool) -> list[str]:
    """The settings the final comparison runs itself: the new baselines and the recipe (sft and sdft too in a smoke
    run, which has no forgetting-benchmark runs on tiny-random to reuse)."""
    labels = dict.fromkeys([*(REUSED if smoke else ()), *FINAL_NEW, recipe])
    return [k for k in labels if smoke or k not in REUSED]


def final_plan(name: str, lrs: dict[str, float], recipe: str, smoke: bool) -> Path:
    every = settings(lrs)
    methods = {k: every[k] for k in final_settings(recipe, smoke)}
    seeds = [0] if smoke else forgetting.SEEDS
    out = RESULTS / (f"final_smoke_{name}" if smoke else f"final_{name}")
    raw = forgetting.plan_dict(
        out, forgetting.SEQUENCES[name], methods, seeds, "test", forgetting.PRIOR, forgetting.LIMIT
    )
    if smoke:
        common.shrink_to_smoke(raw, VALIDATION_PRIOR)
    comment = (
        f"Recipe final comparison on {name} ({' → '.join(forgetting.SEQUENCES[name])}), test splits; "
        f"recipe {recipe}; sft and sdft are the forgetting benchmark's runs."
    )
    return common.write_plan(RECIPES.plans, f"recipes_final_{'smoke_' if smoke else ''}{name}", raw, comment)


def objective_by_setting() -> dict[str, dict[str, float]]:
    """Setting → sequence → the tuning objective at the end (finished runs only)."""
    out: dict[str, dict[str, float]] = {}
    for name in SCREEN_SEQUENCES:
        run_dir = RESULTS / f"screen_{name}"
        if not (run_dir / "results.json").is_file():
            continue
        results = load_results(run_dir)
        for label in results["methods"]:
            s = summarize_method(results, label)
            if s["stages_done"] == len(forgetting.SEQUENCES[name]):
                out.setdefault(results["methods"][label]["setting"], {})[name] = forgetting.objective(s)
    return out


def chosen_recipe(scores: dict[str, dict[str, float]]) -> str | None:
    """The pre-registered choice; None until every setting has finished every screen sequence."""
    done = {k: v for k, v in scores.items() if len(v) == len(SCREEN_SEQUENCES)}
    if len(done) < len(SETTINGS):
        return None
    candidates = [k for k in SETTINGS if k not in BASELINES]
    return max(candidates, key=lambda k: (sum(done[k].values()) / len(done[k]), -k.count("+")))


def cmd_screen(args: Args) -> None:
    lrs = forgetting.tuned_lrs(FORGETTING)
    for name in SCREEN_SEQUENCES:
        start = time.perf_counter()
        if common.run_plan_file(screen_plan(name, lrs, args.smoke)) and not args.smoke:
            common.log_time(f"screen {name}", start, RESULTS)  # smoke runs are not timed
    if not args.smoke:
        cmd_summary(args)


def cmd_summary(_args: Args) -> None:
    rows = []
    for name in SCREEN_SEQUENCES:
        run_dir = RESULTS / f"screen_{name}"
        if not (run_dir / "results.json").is_file():
            continue
        results = load_results(run_dir)
        for label, record in results["methods"].items():
            s = summarize_method(results, label)
            scores = (s["acc"], s["near_end"], s["prior_end"], forgetting.objective(s))
            rows.append([name, record["setting"], f"{s['stages_done']}/3", *(f"{x:.3f}" for x in scores)])
    if not rows:
        print("no screen runs yet")
        return
    scores = objective_by_setting()
    chosen = chosen_recipe(scores)
    text = "## Recipe screen (validation splits, seed 0)\n\n"
    text += md_table(["sequence", "setting", "stages", "ACC", "near-prior", "prior_probe", "objective"], rows)
    text += "\n\nMean objective over the screen sequences: "
    text += ", ".join(f"{k} {sum(v.values()) / len(v):.3f}" for k, v in scores.items() if v)
    text += f"\n\nChosen recipe: {chosen or 'not yet (the screen has not finished)'}\n\nCPU: {common.cpu_model()}\n"
    print(text)
    (RESULTS / "screen_summary.md").write_text(text)
    if chosen:
        write_json(RESULTS / "chosen_recipe.json", {"recipe": chosen, "scores": scores})


# ---------------------------------------------------------------- final comparison


def chosen_or_exit(smoke: bool) -> str:
    if smoke:
        return SMOKE_RECIPE
    chosen = read_json(RESULTS / "chosen_recipe.json")
    if chosen is None:
        sys.exit("the screen has not chosen a recipe yet: run `benchmarks/recipes.py screen` to the end first")
    return chosen["recipe"]


def cmd_final(args: Args) -> None:
    recipe = chosen_or_exit(args.smoke)
    lrs = forgetting.tuned_lrs(FORGETTING)
    for seed in [0] if args.smoke else args.seeds:
        for name in args.sequences:
            start = time.perf_counter()
            if common.run_plan_file(final_plan(name, lrs, recipe, args.smoke), seeds=[seed]) and not args.smoke:
                common.log_time(f"final {name} seed {seed}", start, RESULTS)
    cmd_final_summary(args, recipe)


def per_seed(run_dir: Path) -> dict[str, dict[str, dict]]:
    """Setting → scalar → seed → value, finished runs only ({} when the run directory has no results yet)."""
    if not (run_dir / "results.json").is_file():
        return {}
    return {setting: v["per_seed"] for setting, v in aggregate(load_results(run_dir)).items()}


def goal_met(recipe: dict[str, dict], sft: dict[str, dict]) -> bool | None:
    """The pre-registered goal on one sequence: means over the seeds both sides finished (all three at the end, so
    a partial comparison is paired as the final one will be); None while they share no finished seed."""
    keys = ("acc", "prior_drop", "near_drop")
    r = {k: mean_std([v for seed, v in recipe[k].items() if seed in sft[k]])[0] for k in keys}
    b = {k: mean_std([v for seed, v in sft[k].items() if seed in recipe[k]])[0] for k in keys}
    if not all(math.isfinite(x) for x in [*r.values(), *b.values()]):
        return None
    return (
        r["prior_drop"] <= GOAL_RATIO * b["prior_drop"]
        and r["near_drop"] <= GOAL_RATIO * b["near_drop"]
        and r["acc"] >= b["acc"]
    )


def final_per_seed(name: str, recipe: str, smoke: bool = False) -> dict[str, dict[str, dict]]:
    """One sequence's settings in the final comparison's order (the forgetting benchmark's sft and sdft runs, then
    the new baselines and the recipe): setting → scalar → seed → value; {} before any of its new runs started."""
    seqs = per_seed(RESULTS / (f"final_smoke_{name}" if smoke else f"final_{name}"))
    if seqs and not smoke:
        reused = per_seed(FORGETTING / name)
        seqs = {**{k: reused[k] for k in REUSED if k in reused}, **seqs}
    return {k: seqs[k] for k in dict.fromkeys((*REUSED, *FINAL_NEW, recipe)) if k in seqs}


def final_tables(recipe: str, smoke: bool = False) -> tuple[str, dict[str, bool | None], dict[str, dict]]:
    """Per sequence and setting mean ± std, paired differences against SFT, the goal per sequence, and what they
    were computed from (sequence → ``final_per_seed``)."""
    rows, diffs, goals = [], [], {}
    by_sequence = {name: final_per_seed(name, recipe, smoke) for name in forgetting.SEQUENCES}
    for name, seqs in by_sequence.items():
        for k in seqs:
            cells = [pm(mean_std(list(seqs[k][key].values()))) for key in KEYS]
            rows.append([name, k + (" (recipe)" if k == recipe else ""), str(len(seqs[k]["acc"])), *cells])
            if k != "sft" and "sft" in seqs:
                diffs.append([name, f"{k} − sft", *(diff(paired_difference(seqs[k][x], seqs["sft"][x])) for x in KEYS)])
        if recipe in seqs and "sft" in seqs:
            goals[name] = goal_met(seqs[recipe], seqs["sft"])
    text = md_table(["sequence", "setting", "seeds", *HEADER], rows)
    text += "\n\nPaired differences against SFT (mean [95% t-interval] over seeds):\n\n"
    text += md_table(["sequence", "difference", *HEADER], diffs)
    return text, goals, by_sequence


def plot_final(by_sequence: dict[str, dict], recipe: str, path: Path) -> None:
    """The final comparison's learning against retention, per sequence (``common.plot_sequences``)."""
    title = f"Final comparison, test splits, recipe {recipe}"
    common.plot_sequences(by_sequence, path, title, forgetting.SEQUENCES, highlight=recipe)


def cmd_final_summary(args: Args, recipe: str | None = None) -> None:
    recipe = recipe or chosen_or_exit(args.smoke)
    text, goals, by_sequence = final_tables(recipe, args.smoke)
    verdict = ", ".join(f"{k} {'met' if v else 'not met' if v is not None else 'pending'}" for k, v in goals.items())
    met = sum(1 for v in goals.values() if v)
    done = sum(1 for v in goals.values() if v is not None)
    n = len(forgetting.SEQUENCES)
    text = f"## Final comparison (test splits), recipe: {recipe}\n\n{text}\n\n"
    text += (
        f"Goal (prior and near-prior drop each ≤ {GOAL_RATIO:g}× SFT's at ACC ≥ SFT's, on ≥ {GOAL_SEQUENCES} of "
        f"{n} sequences): {verdict or 'no sequence finished'}; "
        f"{'MET' if met >= GOAL_SEQUENCES else 'not met' if done == n else 'pending'} "
        f"(met on {met} of the {done} sequences with results, over the seeds finished so far)\n\n"
        f"{common.machines_line(RESULTS, 'final ')}\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "final_smoke" if args.smoke else "final"
    (RESULTS / f"{stem}_summary.md").write_text(text)
    plot_final(by_sequence, recipe, RESULTS / f"{stem}_pareto.png")


# ---------------------------------------------------------------- diagnostics and pilots (recipe_analysis.py)


def cmd_diagnostics(args: Args) -> None:
    text = analysis.diagnostics_text(chosen_or_exit(args.smoke))
    print(text)
    (RESULTS / "final_diagnostics.md").write_text(text)


def cmd_pilot(args: Args) -> None:
    lrs = forgetting.tuned_lrs(FORGETTING)
    seeds = [0] if args.smoke else args.seeds
    for kind in args.pilots:
        for skill in analysis.PILOT_SKILLS:
            start = time.perf_counter()
            if common.run_plan_file(analysis.pilot_plan(skill, lrs, args.smoke, kind), seeds=seeds) and not args.smoke:
                label = "pilot" if kind == "rollout" else "pilot teacher"
                common.log_time(f"{label} {skill} seeds {' '.join(map(str, seeds))}", start, RESULTS)
    cmd_pilot_summary(args)


def cmd_pilot_summary(args: Args) -> None:
    text = analysis.pilot_text(args.smoke)
    print(text)
    (RESULTS / f"{'pilot_smoke' if args.smoke else 'pilot'}_summary.md").write_text(text)


COMMANDS = {
    "screen": cmd_screen,
    "summary": cmd_summary,
    "final": cmd_final,
    "final-summary": cmd_final_summary,
    "diagnostics": cmd_diagnostics,
    "pilot": cmd_pilot,
    "pilot-summary": cmd_pilot_summary,
}


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    common.setup_logging()
    COMMANDS[args.command](args)


if __name__ == "__main__":
    main()
