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

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import forgetting

from selfdistill.continual.metrics import aggregate, mean_std, paired_difference, summarize_method
from selfdistill.continual.report import load_results, write_report
from selfdistill.continual.results import read_metrics_jsonl
from selfdistill.environment import cpu_model

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
REUSED = ("sft", "sdft")  # the final comparison reads these from the forgetting benchmark's runs
FINAL_NEW = ("sft+anchor", "seqkd+filter")
SMOKE_RECIPE = "sdft+anchor"  # any recipe will do to exercise the pipeline; the smoke numbers mean nothing
GOAL_RATIO = 0.25
GOAL_SEQUENCES = 3

log = logging.getLogger("recipes")


def settings(lrs: dict[str, float]) -> dict[str, dict]:
    return {
        label: {"method": method, **forgetting.METHODS[method], "lr": lrs[method], **extra}
        for label, (method, extra) in SETTINGS.items()
    }


def screen_plan(name: str, lrs: dict[str, float], smoke: bool) -> Path:
    raw = forgetting._plan(
        f"screen_{name}", forgetting.SEQUENCES[name], settings(lrs), [0], "validation", SCREEN_PRIOR, forgetting.LIMIT
    )
    raw["output"] = str(RESULTS / (f"smoke_{name}" if smoke else f"screen_{name}"))
    if smoke:
        _shrink(raw)
    comment = f"Recipe screen on {name} ({' → '.join(forgetting.SEQUENCES[name])}), validation splits, seed 0."
    return forgetting._write_plan(f"recipes_{'smoke_' if smoke else ''}{name}", raw, comment)


def _shrink(raw: dict) -> None:
    """The pipeline, not the numbers: one step of everything on the tiny random model."""
    raw["model"] = "tiny-random"
    raw["train"] |= {"batch_size": 2, "max_new_tokens": 6}
    raw["methods"] = {k: {**v, "anchor_batch_size": 2} if "anchor" in v else v for k, v in raw["methods"].items()}
    raw["stages"] = [{**s, "steps": 1} for s in raw["stages"]]
    raw["eval"] |= {"limit": 2, "batch_size": 2, "max_new_tokens": 8}
    raw["eval"]["prior"] = SCREEN_PRIOR


def final_settings(recipe: str, smoke: bool) -> list[str]:
    """The settings the final comparison runs itself: the new baselines and the recipe (sft and sdft too in a smoke
    run, which has no forgetting-benchmark runs on tiny-random to reuse)."""
    labels = dict.fromkeys([*(REUSED if smoke else ()), *FINAL_NEW, recipe])
    return [k for k in labels if smoke or k not in REUSED]


def final_plan(name: str, lrs: dict[str, float], recipe: str, smoke: bool) -> Path:
    every = settings(lrs)
    methods = {k: every[k] for k in final_settings(recipe, smoke)}
    seeds = [0] if smoke else forgetting.SEEDS
    raw = forgetting._plan(
        f"final_{name}", forgetting.SEQUENCES[name], methods, seeds, "test", forgetting.PRIOR, forgetting.LIMIT
    )
    raw["output"] = str(RESULTS / (f"final_smoke_{name}" if smoke else f"final_{name}"))
    if smoke:
        _shrink(raw)
    comment = (
        f"Recipe final comparison on {name} ({' → '.join(forgetting.SEQUENCES[name])}), test splits; "
        f"recipe {recipe}; sft and sdft are the forgetting benchmark's runs."
    )
    return forgetting._write_plan(f"recipes_final_{'smoke_' if smoke else ''}{name}", raw, comment)


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
        if forgetting._run(screen_plan(name, lrs, args.smoke)) and not args.smoke:
            forgetting._log_time(f"screen {name}", start, RESULTS)  # smoke runs are not timed
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
            rows.append(
                [
                    name,
                    record["setting"],
                    f"{s['stages_done']}/3",
                    f"{s['acc']:.3f}",
                    f"{s['near_end']:.3f}",
                    f"{s['prior_end']:.3f}",
                    f"{forgetting.objective(s):.3f}",
                ]
            )
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


# ---------------------------------------------------------------- final comparison


def chosen_or_exit(smoke: bool) -> str:
    if smoke:
        return SMOKE_RECIPE
    path = RESULTS / "chosen_recipe.json"
    if not path.is_file():
        sys.exit("the screen has not chosen a recipe yet: run `benchmarks/recipes.py screen` to the end first")
    return json.loads(path.read_text())["recipe"]


def cmd_final(args) -> None:
    recipe = chosen_or_exit(args.smoke)
    lrs = json.loads((forgetting.RESULTS / "chosen_lr.json").read_text())
    for seed in [0] if args.smoke else args.seeds:
        for name in args.sequences:
            start = time.perf_counter()
            if forgetting._run(final_plan(name, lrs, recipe, args.smoke), seeds=[seed]) and not args.smoke:
                forgetting._log_time(f"final {name} seed {seed}", start, RESULTS)
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
        reused = per_seed(forgetting.RESULTS / name)
        seqs = {**{k: reused[k] for k in REUSED if k in reused}, **seqs}
    return {k: seqs[k] for k in dict.fromkeys((*REUSED, *FINAL_NEW, recipe)) if k in seqs}


def final_tables(recipe: str, smoke: bool = False) -> tuple[str, dict[str, bool | None], dict[str, dict]]:
    """Per sequence and setting mean ± std, paired differences against SFT, the goal per sequence, and what they
    were computed from (sequence → ``final_per_seed``)."""
    keys = ("acc", "bwt", "prior_drop", "near_drop")
    rows, diffs, goals = [], [], {}
    by_sequence = {name: final_per_seed(name, recipe, smoke) for name in forgetting.SEQUENCES}
    for name, seqs in by_sequence.items():
        for k in seqs:
            cells = [forgetting._pm(mean_std(list(seqs[k][key].values()))) for key in keys]
            rows.append([name, k + (" (recipe)" if k == recipe else ""), str(len(seqs[k]["acc"])), *cells])
            if k != "sft" and "sft" in seqs:
                diffs.append(
                    [
                        name,
                        f"{k} − sft",
                        *(forgetting._diff(paired_difference(seqs[k][key], seqs["sft"][key])) for key in keys),
                    ]
                )
        if recipe in seqs and "sft" in seqs:
            goals[name] = goal_met(seqs[recipe], seqs["sft"])
    text = forgetting._md(["sequence", "setting", "seeds", "ACC", "BWT", "prior drop", "near-prior drop"], rows)
    text += "\n\nPaired differences against SFT (mean [95% t-interval] over seeds):\n\n"
    text += forgetting._md(["sequence", "difference", "ACC", "BWT", "prior drop", "near-prior drop"], diffs)
    return text, goals, by_sequence


def plot_final(by_sequence: dict[str, dict], recipe: str, path: Path) -> None:
    """The final comparison's learning against retention, per sequence (``forgetting.plot_sequences``)."""
    forgetting.plot_sequences(by_sequence, path, f"Final comparison, test splits, recipe {recipe}", highlight=recipe)


def cmd_final_summary(args, recipe: str | None = None) -> None:
    recipe = recipe or chosen_or_exit(args.smoke)
    text, goals, by_sequence = final_tables(recipe, args.smoke)
    verdict = ", ".join(f"{k} {'met' if v else 'not met' if v is not None else 'pending'}" for k, v in goals.items())
    met = sum(1 for v in goals.values() if v)
    done = sum(1 for v in goals.values() if v is not None)
    text = f"## Final comparison (test splits), recipe: {recipe}\n\n{text}\n\n"
    text += (
        f"Goal (prior and near-prior drop each ≤ {GOAL_RATIO:g}× SFT's at ACC ≥ SFT's, on ≥ {GOAL_SEQUENCES} of "
        f"{len(forgetting.SEQUENCES)} sequences): {verdict or 'no sequence finished'}; "
        f"{'MET' if met >= GOAL_SEQUENCES else 'not met' if done == len(forgetting.SEQUENCES) else 'pending'} "
        f"(met on {met} of the {done} sequences with results, over the seeds finished so far)\n\n"
        f"{forgetting.machines_line(RESULTS, 'final ')}\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "final_smoke" if args.smoke else "final"
    (RESULTS / f"{stem}_summary.md").write_text(text)
    plot_final(by_sequence, recipe, RESULTS / f"{stem}_pareto.png")


DIAGNOSTICS = {
    "kl": "KL",
    "anchor_kl": "anchor KL",
    "teacher_minus_student_logprob": "teacher − student log-prob",
    "student_entropy": "student entropy",
    "completion_length": "completion length",
}


def stage_diagnostics(
    run_dir: Path, setting: str, steps: slice = slice(None), keys=DIAGNOSTICS
) -> dict[int, dict[str, dict[int, float]]]:
    """Stage index → diagnostic → seed → its mean over the stage's training steps (those ``steps`` selects), for
    ``setting``'s finished stages in ``run_dir`` (from each stage's metrics.jsonl; ``keys``: which logged values)."""
    out: dict[int, dict[str, dict[int, float]]] = {}
    if not (run_dir / "results.json").is_file():
        return out
    for run in load_results(run_dir)["methods"].values():
        if run.get("setting") != setting:
            continue
        for stage in run["stages"]:
            if not stage.get("train_dir"):
                continue
            rows = [r for r in read_metrics_jsonl(run_dir / stage["train_dir"] / "metrics.jsonl") if "loss" in r][steps]
            for key in keys:
                values = [float(r[key]) for r in rows if key in r]
                if values:
                    out.setdefault(stage["index"], {}).setdefault(key, {})[run["seed"]] = sum(values) / len(values)
    return out


AGREEMENT = {
    "first": "first character right",
    "prefix": "share of the gold answer written before the first error",
    "acc": "accuracy",
}


def answer_agreement(run_dir: Path, setting: str) -> dict[str, dict[str, list[float]]]:
    """Skill → measure → one value per finished stage of ``setting`` in ``run_dir`` that trained the skill: how far
    the greedy answers to its test items follow the gold answer right after that stage (``AGREEMENT``, each a mean
    over the items). ``setting="base"`` reads the base model's answers to every stage task instead."""
    out: dict[str, dict[str, list[float]]] = {}
    if not (run_dir / "results.json").is_file():
        return out
    results = load_results(run_dir)
    if setting == "base":
        sources = [(run_dir / "base" / "predictions.jsonl", task) for task in results["stage_tasks"]]
    else:
        sources = [
            (run_dir / stage["train_dir"] / "eval" / "predictions.jsonl", stage["train_task"])
            for run in results["methods"].values()
            if run.get("setting") == setting
            for stage in run["stages"]
            if stage.get("train_dir")
        ]
    for path, task in sources:
        for key, value in _agreement(path, task).items():
            out.setdefault(task, {}).setdefault(key, []).append(value)
    return out


def _agreement(predictions: Path, task: str) -> dict[str, float]:
    """``AGREEMENT``'s measures (each a mean over the items) of ``task``'s greedy answers in a predictions file."""
    rows = [r for r in map(json.loads, predictions.read_text(encoding="utf-8").splitlines()) if r["task"] == task]
    items = [
        (
            float(r["prediction"].strip()[:1] == r["gold"][:1]),
            len(os.path.commonprefix([r["prediction"].strip(), r["gold"]])) / max(1, len(r["gold"])),
            float(r["scores"]["acc"]),
        )
        for r in rows
    ]
    return {key: sum(values) / len(values) for key, values in zip(AGREEMENT, zip(*items, strict=True), strict=True)}


def run_dirs(setting: str) -> list[Path]:
    """Every sequence's run directory that holds ``setting``: the forgetting benchmark's for its own settings and the
    base model, the final comparison's for the rest."""
    if setting in ("base", *REUSED):
        return [forgetting.RESULTS / name for name in forgetting.SEQUENCES]
    return [RESULTS / f"final_{name}" for name in forgetting.SEQUENCES]


def agreement_table(recipe: str) -> str:
    """Per skill, each setting's answers right after the skill's stage against the gold answers, pooled over every
    sequence and seed that trains it (the base model: its answers before any training)."""
    pooled: dict[str, dict[str, dict[str, list[float]]]] = {}
    for setting in dict.fromkeys(("base", *REUSED, *FINAL_NEW, recipe)):
        seen = set()
        for run_dir in run_dirs(setting):
            for task, measures in answer_agreement(run_dir, setting).items():
                if setting == "base" and task in seen:  # the same base answers in every sequence that trains it
                    continue
                seen.add(task)
                for key, values in measures.items():
                    pooled.setdefault(task, {}).setdefault(setting, {}).setdefault(key, []).extend(values)
    rows = [
        [task, setting, str(len(m["acc"])), *(forgetting._pm(mean_std(m[k])) for k in AGREEMENT)]
        for task in sorted(pooled)
        for setting, m in pooled[task].items()
    ]
    return forgetting._md(["skill", "setting", "runs", *AGREEMENT.values()], rows)


def _pooled_values(per_dir: list[dict[int, dict[str, dict[int, float]]]], key: str) -> list[float]:
    return [v for stages in per_dir for stage in stages.values() for v in stage.get(key, {}).values()]


def trend_table(recipe: str, n: int = 3) -> str:
    """Each diagnostic over a stage's first ``n`` steps and its last ``n``, mean ± std over every finished stage of
    every sequence and seed: whether training moved the student toward its teacher on its own samples."""
    rows = []
    for setting in dict.fromkeys(("sdft", recipe)):
        first = [stage_diagnostics(d, setting, slice(0, n)) for d in run_dirs(setting)]
        last = [stage_diagnostics(d, setting, slice(-n, None)) for d in run_dirs(setting)]
        for key, label in DIAGNOSTICS.items():
            a, b = _pooled_values(first, key), _pooled_values(last, key)
            if a:
                rows.append([setting, label, str(len(a)), forgetting._pm(mean_std(a)), forgetting._pm(mean_std(b))])
    return forgetting._md(["setting", "diagnostic", "stages", f"first {n} steps", f"last {n} steps"], rows)


def teacher_table() -> str:
    """Per skill, the teacher (the model with the demonstration in context) greedy and sampled: its accuracy in
    ``selfdistill probe`` before training, beside the share of its T = 1 samples the scorer accepted in filtered
    seqkd's stages (mean over each stage's steps, then over the runs that trained the skill)."""
    path = forgetting.RESULTS / "probe.json"
    probe = json.loads(path.read_text()) if path.is_file() else {}
    kept: dict[str, list[float]] = {}
    for name, tasks in forgetting.SEQUENCES.items():
        for index, values in stage_diagnostics(RESULTS / f"final_{name}", "seqkd+filter", keys=["seqkd_kept"]).items():
            kept.setdefault(tasks[index - 1], []).extend(values.get("seqkd_kept", {}).values())
    rows = [
        [skill, f"{probe[skill]['teacher']:.2f}" if skill in probe else "—", str(len(v)), forgetting._pm(mean_std(v))]
        for skill, v in sorted(kept.items())
    ]
    return forgetting._md(["skill", "teacher greedy (probe)", "runs", "teacher samples accepted (T = 1)"], rows)


def cmd_diagnostics(args) -> None:
    """Per sequence and stage, plain SDFT (the forgetting benchmark's runs) beside the recipe: each diagnostic's mean
    over training steps, then mean ± std over the seeds both have."""
    recipe = chosen_or_exit(args.smoke)
    rows = []
    for name, tasks in forgetting.SEQUENCES.items():
        sides = {
            "sdft": stage_diagnostics(forgetting.RESULTS / name, "sdft"),
            recipe: stage_diagnostics(RESULTS / f"final_{name}", recipe),
        }
        for index in sorted(sides[recipe]):
            seeds = set.intersection(*(set(sides[k].get(index, {}).get("kl", {})) for k in sides))
            for setting, stages in sides.items():
                cells = []
                for key in DIAGNOSTICS:
                    values = [v for seed, v in stages.get(index, {}).get(key, {}).items() if seed in seeds]
                    cells.append(forgetting._pm(mean_std(values)) if values else "—")
                rows.append([name, f"{index} {tasks[index - 1]}", setting, str(len(seeds)), *cells])
    text = f"## Training diagnostics per stage: sdft and {recipe} (means over each stage's steps, then over seeds)\n\n"
    text += forgetting._md(["sequence", "stage", "setting", "seeds", *DIAGNOSTICS.values()], rows) + "\n"
    text += "\n## The same diagnostics at the start and the end of a stage\n\n" + trend_table(recipe) + "\n"
    text += "\n## The teacher, greedy and sampled\n\n" + teacher_table() + "\n"
    text += (
        "\n## Greedy answers right after the skill's own stage, against the gold answers (mean ± std over the "
        "runs that trained the skill, every sequence and seed)\n\n" + agreement_table(recipe) + "\n"
    )
    print(text)
    (RESULTS / "final_diagnostics.md").write_text(text)


# ---------------------------------------------------------------- pilot: the diagnostics' reading, tested once

PILOT_SKILLS = ("extract_trip", "ticket_line")
PILOT_TEMPERATURES = (1.0, 0.5)
PILOT_TEACHER_TEMPERATURES = (0.5,)
PILOTS = ("rollout", "teacher")
"""The pilots: ``rollout`` (the rollout temperature, run first) and ``teacher`` (the teacher's temperature in the
loss, 2026-12-05). Each has its own run directory per skill; the teacher pilot's baseline is the rollout pilot's
``sdft``, the same settings and seeds."""


def _pilot_dir(kind: str, skill: str, smoke: bool) -> Path:
    prefix = {"rollout": "pilot", "teacher": "pilot_teacher"}[kind]
    return RESULTS / f"{prefix}_{'smoke_' if smoke else ''}{skill}"


def pilot_plan(skill: str, lrs: dict[str, float], smoke: bool, kind: str = "rollout") -> Path:
    """One SDFT stage on ``skill`` per setting, scored on the validation split with its near-prior task and
    prior_probe.

    ``rollout``: each rollout temperature in ``PILOT_TEMPERATURES`` (1.0 is the benchmark's sdft). Written before it
    ran, from the diagnostics' reading ("SDFT learns an answer from its front": a training signal toward a later part
    of an answer comes only from rollouts that got the earlier parts right). Its prediction: at a lower rollout
    temperature the student's greedy answers follow the gold answer further (the prefix share in ``AGREEMENT``)
    after the same 12 steps. The skills are the two where SDFT's prefix stayed lowest while the teacher's greedy
    answer was mostly right (extract_trip 0.35 vs the teacher's 0.69, ticket_line 0.27 vs 1.00).

    ``teacher``: each teacher temperature τ in ``PILOT_TEACHER_TEMPERATURES``, rollouts at 1.0. Written before it
    ran, from the same reading's second half: the teacher is right at its mode (greedy 1.00 on ticket_line) but its
    samples at T = 1 are accepted 9–14% of the time, so the target spreads mass over wrong continuations. Its
    prediction: a sharper target (τ = 0.5) moves the student's greedy answers further along the gold answer (a
    higher prefix share than the rollout pilot's ``sdft``) after the same 12 steps."""
    sdft = {"method": "sdft", **forgetting.METHODS["sdft"], "lr": lrs["sdft"]}
    if kind == "rollout":
        methods = {
            "sdft": sdft,
            **{f"sdft[T={t:g}]": {**sdft, "temperature": t} for t in PILOT_TEMPERATURES if t != 1.0},
        }
        what = "SDFT's rollout temperature"
    else:
        methods = {f"sdft[teacher T={t:g}]": {**sdft, "teacher_temperature": t} for t in PILOT_TEACHER_TEMPERATURES}
        what = "SDFT's teacher temperature"
    seeds = [0] if smoke else forgetting.SEEDS
    name = _pilot_dir(kind, skill, smoke).name
    raw = forgetting._plan(name, [skill], methods, seeds, "validation", SCREEN_PRIOR, forgetting.LIMIT)
    raw["output"] = str(RESULTS / name)
    if smoke:
        _shrink(raw)
    comment = f"Pilot: {what} on {skill}, validation split (the diagnostics' prediction)."
    return forgetting._write_plan(f"recipes_{name}", raw, comment)


def cmd_pilot(args) -> None:
    lrs = json.loads((forgetting.RESULTS / "chosen_lr.json").read_text())
    seeds = [0] if args.smoke else args.seeds
    for kind in args.pilots:
        for skill in PILOT_SKILLS:
            start = time.perf_counter()
            if forgetting._run(pilot_plan(skill, lrs, args.smoke, kind), seeds=seeds) and not args.smoke:
                label = "pilot" if kind == "rollout" else "pilot teacher"
                forgetting._log_time(f"{label} {skill} seeds {' '.join(map(str, seeds))}", start, RESULTS)
    cmd_pilot_summary(args)


def pilot_table(smoke: bool = False) -> str:
    """Per skill and setting (mean ± std over finished seeds): the base model's row, then each setting's accuracy,
    first-character and prefix agreement with the gold answers, near-prior and prior_probe at the end."""
    rows = []
    for skill in PILOT_SKILLS:
        based = False
        for kind in PILOTS:
            run_dir = _pilot_dir(kind, skill, smoke)
            if not (run_dir / "results.json").is_file():
                continue
            results = load_results(run_dir)
            base = answer_agreement(run_dir, "base").get(skill, {})
            if base and not based:
                based = True
                rows.append(
                    [skill, "base model", "—", *(f"{base[k][0]:.3f}" for k in ("acc", "first", "prefix")), "—", "—"]
                )
            for setting in dict.fromkeys(run["setting"] for run in results["methods"].values()):
                agree = answer_agreement(run_dir, setting).get(skill)
                if not agree:
                    continue
                summaries = [
                    summarize_method(results, label)
                    for label, run in results["methods"].items()
                    if run["setting"] == setting and run["stages"] and run["stages"][-1].get("train_dir")
                ]
                rows.append(
                    [
                        skill,
                        setting,
                        str(len(agree["acc"])),
                        *(forgetting._pm(mean_std(agree[k])) for k in ("acc", "first", "prefix")),
                        forgetting._pm(mean_std([s["near_end"] for s in summaries])),
                        forgetting._pm(mean_std([s["prior_end"] for s in summaries])),
                    ]
                )
    return forgetting._md(
        ["skill", "setting", "seeds", "accuracy", "first character right", "prefix share", "near-prior", "prior_probe"],
        rows,
    )


PILOT_MEASURES = {"prefix": "prefix share", "near_end": "near-prior", "prior_end": "prior_probe"}


def pilot_per_seed(skill: str, smoke: bool = False) -> dict[str, dict[str, dict[int, float]]]:
    """Setting → measure (``PILOT_MEASURES``) → seed → value, over both pilots' finished runs on ``skill``."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for kind in PILOTS:
        run_dir = _pilot_dir(kind, skill, smoke)
        if not (run_dir / "results.json").is_file():
            continue
        results = load_results(run_dir)
        for label, run in results["methods"].items():
            trained = [stage for stage in run["stages"] if stage.get("train_dir")]
            if not trained:
                continue
            summary = summarize_method(results, label)
            agree = _agreement(run_dir / trained[-1]["train_dir"] / "eval" / "predictions.jsonl", skill)
            values = {"prefix": agree["prefix"], "near_end": summary["near_end"], "prior_end": summary["prior_end"]}
            for key, value in values.items():
                out.setdefault(run["setting"], {}).setdefault(key, {})[run["seed"]] = value
    return out


def pilot_differences(smoke: bool = False) -> str:
    """Each pilot setting minus the benchmark's sdft, paired by seed, with 95% t-intervals."""
    rows = []
    for skill in PILOT_SKILLS:
        per_seed = pilot_per_seed(skill, smoke)
        for setting, measures in per_seed.items():
            if setting == "sdft" or "sdft" not in per_seed:
                continue
            rows.append(
                [
                    skill,
                    f"{setting} − sdft",
                    *(forgetting._diff(paired_difference(measures[k], per_seed["sdft"][k])) for k in PILOT_MEASURES),
                ]
            )
    return forgetting._md(["skill", "difference", *PILOT_MEASURES.values()], rows)


def cmd_pilot_summary(args) -> None:
    text = (
        "## Pilots: SDFT's rollout temperature and its teacher's temperature (validation splits; after the "
        "skill's one 12-step stage)\n\n"
        + pilot_table(args.smoke)
        + "\n\nPaired by seed against sdft (mean [95% interval], n pairs):\n\n"
        + pilot_differences(args.smoke)
        + f"\n\n{forgetting.machines_line(RESULTS, 'pilot ')}\n"
    )
    print(text)
    (RESULTS / f"{'pilot_smoke' if args.smoke else 'pilot'}_summary.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", choices=("screen", "summary", "final", "final-summary", "diagnostics", "pilot", "pilot-summary")
    )
    parser.add_argument("--smoke", action="store_true", help="one step of every setting on tiny-random")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=list(forgetting.SEEDS), help="final, pilot: which seeds"
    )
    parser.add_argument(
        "--pilots",
        nargs="+",
        default=list(PILOTS),
        choices=list(PILOTS),
        help="pilot: which (rollout: the rollout temperature; teacher: the teacher temperature)",
    )
    parser.add_argument(
        "--sequences",
        nargs="+",
        default=list(forgetting.SEQUENCES),
        choices=list(forgetting.SEQUENCES),
        help="final: which sequences",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    commands = {
        "screen": cmd_screen,
        "summary": cmd_summary,
        "final": cmd_final,
        "final-summary": cmd_final_summary,
        "diagnostics": cmd_diagnostics,
        "pilot": cmd_pilot,
        "pilot-summary": cmd_pilot_summary,
    }
    commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
