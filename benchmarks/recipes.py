"""The recipe screen: which self-distillation recipe learns the skills while keeping what the model already did,
chosen on validation splits before any of the recipes' test numbers is read.

    .venv/bin/python benchmarks/recipes.py screen      # resumable; writes benchmarks/results/recipes/
    .venv/bin/python benchmarks/recipes.py summary     # the table and the chosen recipe, from the results alone
    .venv/bin/python benchmarks/recipes.py screen --smoke   # every setting for one step on tiny-random (minutes)

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
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import forgetting

from selfdistill.environment import cpu_model
from selfdistill.metrics import summarize_method
from selfdistill.report import load_results, write_report

RESULTS = forgetting.ROOT / "results" / "recipes"
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
SCREEN_PRIOR = [{"task": "prior_probe"}]

log = logging.getLogger("recipes")


def settings(lrs: dict[str, float]) -> dict[str, dict]:
    return {label: {"method": method, **forgetting.METHODS[method], "lr": lrs[method], **extra}
            for label, (method, extra) in SETTINGS.items()}  # fmt: skip


def screen_plan(name: str, lrs: dict[str, float], smoke: bool) -> Path:
    raw = forgetting._plan(f"screen_{name}", forgetting.SEQUENCES[name], settings(lrs), [0], "validation",
                           SCREEN_PRIOR, forgetting.LIMIT)  # fmt: skip
    raw["output"] = str(RESULTS / (f"smoke_{name}" if smoke else f"screen_{name}"))
    if smoke:  # the pipeline, not the numbers: one step of everything on the tiny random model
        raw["model"] = "tiny-random"
        raw["train"] |= {"batch_size": 2, "max_new_tokens": 6}
        raw["methods"] = {k: {**v, "anchor_batch_size": 2} if "anchor" in v else v for k, v in raw["methods"].items()}
        raw["stages"] = [{**s, "steps": 1} for s in raw["stages"]]
        raw["eval"] |= {"limit": 2, "batch_size": 2, "max_new_tokens": 8}
    comment = f"Recipe screen on {name} ({' → '.join(forgetting.SEQUENCES[name])}), validation splits, seed 0."
    return forgetting._write_plan(f"recipes_{'smoke_' if smoke else ''}{name}", raw, comment)


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


def cmd_screen(args) -> None:
    lrs = json.loads((forgetting.RESULTS / "chosen_lr.json").read_text())
    for name in SCREEN_SEQUENCES:
        start = time.perf_counter()
        forgetting._run(screen_plan(name, lrs, args.smoke))
        line = {"what": f"screen {name}{' smoke' if args.smoke else ''}", "cpu": cpu_model(),
                "seconds": round(time.perf_counter() - start, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        RESULTS.mkdir(parents=True, exist_ok=True)
        with (RESULTS / "wall_times.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
    if not args.smoke:
        cmd_summary(args)


def cmd_summary(_args) -> None:
    rows = []
    for name in SCREEN_SEQUENCES:
        run_dir = RESULTS / f"screen_{name}"
        if not (run_dir / "results.json").is_file():
            continue
        write_report(run_dir)
        results = load_results(run_dir)
        for label, record in results["methods"].items():
            s = summarize_method(results, label)
            rows.append([name, record["setting"], f"{s['stages_done']}/3", f"{s['acc']:.3f}", f"{s['near_end']:.3f}",
                         f"{s['prior_end']:.3f}", f"{forgetting.objective(s):.3f}"])  # fmt: skip
    if not rows:
        print("no screen runs yet")
        return
    scores = objective_by_setting()
    chosen = chosen_recipe(scores)
    text = "## Recipe screen (validation splits, seed 0)\n\n"
    text += forgetting._md(["sequence", "setting", "stages", "ACC", "near-prior", "prior_probe", "objective"], rows)
    text += "\n\nMean objective over the screen sequences: "
    text += ", ".join(f"{k} {sum(v.values()) / len(v):.3f}" for k, v in scores.items() if v)
    text += f"\n\nChosen recipe: {chosen or 'not yet (the screen has not finished)'}\n\nCPU: {cpu_model()}\n"
    print(text)
    (RESULTS / "screen_summary.md").write_text(text)
    if chosen:
        (RESULTS / "chosen_recipe.json").write_text(json.dumps({"recipe": chosen, "scores": scores}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("screen", "summary"))
    parser.add_argument("--smoke", action="store_true", help="one step of every setting on tiny-random")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command == "screen":
        cmd_screen(args)
    else:
        cmd_summary(args)


if __name__ == "__main__":
    sys.exit(main())
