"""What the recipe comparison's runs say beyond their tables: training diagnostics per stage, the teacher greedy and
sampled, how far greedy answers follow the gold ones, and the pilots that test the diagnostics' reading. Used by
``recipes.py diagnostics``, ``pilot`` and ``pilot-summary``; reads each run directory's ``digest.json``.

    print(recipe_analysis.diagnostics_text("sdft+anchor"))
"""

from __future__ import annotations

import common
import forgetting
from common import RESULTS_ROOT, Where, diff, md_table, pm, read_json
from digest import AGREEMENT, base_agreement, stage_entries

from selfdistill.continual.metrics import mean_std, paired_difference, summarize_method
from selfdistill.continual.results import load_results

RECIPES = Where(RESULTS_ROOT / "recipes", forgetting.COMMITTED.plans)
FORGETTING = forgetting.COMMITTED.results
VALIDATION_PRIOR = [{"task": "prior_probe"}]
REUSED = ("sft", "sdft")  # the final comparison reads these from the forgetting benchmark's runs
FINAL_NEW = ("sft+anchor", "seqkd+filter")
DIAGNOSTICS = {
    "kl": "KL",
    "anchor_kl": "anchor KL",
    "teacher_minus_student_logprob": "teacher − student log-prob",
    "student_entropy": "student entropy",
    "completion_length": "completion length",
}


def stage_diagnostics(run_dir, setting: str, steps: slice = slice(None), keys=DIAGNOSTICS) -> dict:
    """Stage index → diagnostic → seed → its mean over the stage's training steps (those ``steps`` selects), for
    ``setting``'s finished stages in ``run_dir`` (from the run's digest of each stage's metrics.jsonl; ``keys``:
    which logged values)."""
    out: dict[int, dict[str, dict[int, float]]] = {}
    if not (run_dir / "results.json").is_file():
        return out
    entries = stage_entries(run_dir)
    for run in load_results(run_dir)["methods"].values():
        if run.get("setting") != setting:
            continue
        for stage in run["stages"]:
            if not stage.get("train_dir") or stage["train_dir"] not in entries:
                continue
            logged = entries[stage["train_dir"]]["steps"]
            for key in keys:
                values = [v for v in logged.get(key, [])[steps] if v is not None]
                if values:
                    out.setdefault(stage["index"], {}).setdefault(key, {})[run["seed"]] = sum(values) / len(values)
    return out


def answer_agreement(run_dir, setting: str) -> dict[str, dict[str, list[float]]]:
    """Skill → measure → one value per finished stage of ``setting`` in ``run_dir`` that trained the skill: how far
    the greedy answers to its test items follow the gold answer right after that stage (``AGREEMENT``, each a mean
    over the items). ``setting="base"`` reads the base model's answers to every stage task instead."""
    out: dict[str, dict[str, list[float]]] = {}
    if not (run_dir / "results.json").is_file():
        return out
    results = load_results(run_dir)
    if setting == "base":
        found = list(base_agreement(run_dir, list(results["stage_tasks"])).items())
    else:
        entries = stage_entries(run_dir)
        found = [
            (stage["train_task"], entries.get(stage["train_dir"], {}).get("agreement"))
            for run in results["methods"].values()
            if run.get("setting") == setting
            for stage in run["stages"]
            if stage.get("train_dir")
        ]
    for task, measures in found:
        for key, value in (measures or {}).items():
            out.setdefault(task, {}).setdefault(key, []).append(value)
    return out


def run_dirs(setting: str, recipes=RECIPES.results, bench=FORGETTING) -> list:
    """Every sequence's run directory that holds ``setting``: the forgetting benchmark's for its own settings and the
    base model, the final comparison's for the rest."""
    if setting in ("base", *REUSED):
        return [bench / name for name in forgetting.SEQUENCES]
    return [recipes / f"final_{name}" for name in forgetting.SEQUENCES]


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
        [task, setting, str(len(m["acc"])), *(pm(mean_std(m[k])) for k in AGREEMENT)]
        for task in sorted(pooled)
        for setting, m in pooled[task].items()
    ]
    return md_table(["skill", "setting", "runs", *AGREEMENT.values()], rows)


def trend_table(recipe: str, n: int = 3) -> str:
    """Each diagnostic over a stage's first ``n`` steps and its last ``n``, mean ± std over every finished stage of
    every sequence and seed: whether training moved the student toward its teacher on its own samples."""

    def pooled(per_dir: list[dict], key: str) -> list[float]:
        return [v for stages in per_dir for stage in stages.values() for v in stage.get(key, {}).values()]

    rows = []
    for setting in dict.fromkeys(("sdft", recipe)):
        first = [stage_diagnostics(d, setting, slice(0, n)) for d in run_dirs(setting)]
        last = [stage_diagnostics(d, setting, slice(-n, None)) for d in run_dirs(setting)]
        for key, label in DIAGNOSTICS.items():
            a, b = pooled(first, key), pooled(last, key)
            if a:
                rows.append([setting, label, str(len(a)), pm(mean_std(a)), pm(mean_std(b))])
    return md_table(["setting", "diagnostic", "stages", f"first {n} steps", f"last {n} steps"], rows)


def teacher_table(recipes=RECIPES.results, bench=FORGETTING) -> str:
    """Per skill, the teacher (the model with the demonstration in context) greedy and sampled: its accuracy in
    ``selfdistill probe`` before training, beside the share of its T = 1 samples the scorer accepted in filtered
    seqkd's stages (mean over each stage's steps, then over the runs that trained the skill)."""
    probe = read_json(bench / "probe.json", {})
    kept: dict[str, list[float]] = {}
    for name, tasks in forgetting.SEQUENCES.items():
        for index, values in stage_diagnostics(recipes / f"final_{name}", "seqkd+filter", keys=["seqkd_kept"]).items():
            kept.setdefault(tasks[index - 1], []).extend(values.get("seqkd_kept", {}).values())
    rows = [
        [skill, f"{probe[skill]['teacher']:.2f}" if skill in probe else "—", str(len(v)), pm(mean_std(v))]
        for skill, v in sorted(kept.items())
    ]
    return md_table(["skill", "teacher greedy (probe)", "runs", "teacher samples accepted (T = 1)"], rows)


def diagnostics_text(recipe: str) -> str:
    """Per sequence and stage, plain SDFT (the forgetting benchmark's runs) beside the recipe: each diagnostic's mean
    over training steps, then mean ± std over the seeds both have; then the trend, teacher and agreement tables."""
    rows = []
    for name, tasks in forgetting.SEQUENCES.items():
        sides = {
            "sdft": stage_diagnostics(FORGETTING / name, "sdft"),
            recipe: stage_diagnostics(RECIPES.results / f"final_{name}", recipe),
        }
        for index in sorted(sides[recipe]):
            seeds = set.intersection(*(set(sides[k].get(index, {}).get("kl", {})) for k in sides))
            for setting, stages in sides.items():
                cells = []
                for key in DIAGNOSTICS:
                    values = [v for seed, v in stages.get(index, {}).get(key, {}).items() if seed in seeds]
                    cells.append(pm(mean_std(values)) if values else "—")
                rows.append([name, f"{index} {tasks[index - 1]}", setting, str(len(seeds)), *cells])
    text = f"## Training diagnostics per stage: sdft and {recipe} (means over each stage's steps, then over seeds)\n\n"
    text += md_table(["sequence", "stage", "setting", "seeds", *DIAGNOSTICS.values()], rows) + "\n"
    text += "\n## The same diagnostics at the start and the end of a stage\n\n" + trend_table(recipe) + "\n"
    text += "\n## The teacher, greedy and sampled\n\n" + teacher_table() + "\n"
    text += (
        "\n## Greedy answers right after the skill's own stage, against the gold answers (mean ± std over the "
        "runs that trained the skill, every sequence and seed)\n\n" + agreement_table(recipe) + "\n"
    )
    return text


# ---------------------------------------------------------------- pilot: the diagnostics' reading, tested once

PILOT_SKILLS = ("extract_trip", "ticket_line")
PILOT_TEMPERATURES = (1.0, 0.5)
PILOT_TEACHER_TEMPERATURES = (0.5,)
PILOTS = ("rollout", "teacher")
"""The pilots: ``rollout`` (the rollout temperature, run first) and ``teacher`` (the teacher's temperature in the
loss, 2026-12-05). Each has its own run directory per skill; the teacher pilot's baseline is the rollout pilot's
``sdft``, the same settings and seeds."""
PILOT_MEASURES = {"prefix": "prefix share", "near_end": "near-prior", "prior_end": "prior_probe"}


def pilot_dir(kind: str, skill: str, smoke: bool, recipes=RECIPES.results):
    prefix = {"rollout": "pilot", "teacher": "pilot_teacher"}[kind]
    return recipes / f"{prefix}_{'smoke_' if smoke else ''}{skill}"


def pilot_plan(skill: str, lrs: dict[str, float], smoke: bool, kind: str = "rollout", where: Where = RECIPES):
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
    out = pilot_dir(kind, skill, smoke, where.results)
    raw = forgetting.plan_dict(out, [skill], methods, seeds, "validation", VALIDATION_PRIOR, forgetting.LIMIT)
    if smoke:
        common.shrink_to_smoke(raw, VALIDATION_PRIOR)
    comment = f"Pilot: {what} on {skill}, validation split (the diagnostics' prediction)."
    return common.write_plan(where.plans, f"recipes_{out.name}", raw, comment)


def _finished(results: dict, setting: str) -> list[dict]:
    return [
        summarize_method(results, label)
        for label, run in results["methods"].items()
        if run["setting"] == setting and run["stages"] and run["stages"][-1].get("train_dir")
    ]


def pilot_table(smoke: bool = False) -> str:
    """Per skill and setting (mean ± std over finished seeds): the base model's row, then each setting's accuracy,
    first-character and prefix agreement with the gold answers, near-prior and prior_probe at the end."""
    rows = []
    for skill in PILOT_SKILLS:
        based = False
        for kind in PILOTS:
            run_dir = pilot_dir(kind, skill, smoke)
            if not (run_dir / "results.json").is_file():
                continue
            results = load_results(run_dir)
            base = answer_agreement(run_dir, "base").get(skill, {})
            if base and not based:
                based = True
                rows.append([skill, "base model", "—", *(f"{base[k][0]:.3f}" for k in ("acc", "first", "prefix"))])
                rows[-1] += ["—", "—"]
            for setting in dict.fromkeys(run["setting"] for run in results["methods"].values()):
                agree = answer_agreement(run_dir, setting).get(skill)
                if not agree:
                    continue
                summaries = _finished(results, setting)
                rows.append(
                    [
                        skill,
                        setting,
                        str(len(agree["acc"])),
                        *(pm(mean_std(agree[k])) for k in ("acc", "first", "prefix")),
                    ]
                    + [pm(mean_std([s[k] for s in summaries])) for k in ("near_end", "prior_end")]
                )
    header = ["skill", "setting", "seeds", "accuracy", "first character right", "prefix share", "near-prior"]
    return md_table([*header, "prior_probe"], rows)


def pilot_per_seed(skill: str, smoke: bool = False) -> dict[str, dict[str, dict[int, float]]]:
    """Setting → measure (``PILOT_MEASURES``) → seed → value, over both pilots' finished runs on ``skill``."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for kind in PILOTS:
        run_dir = pilot_dir(kind, skill, smoke)
        if not (run_dir / "results.json").is_file():
            continue
        results, entries = load_results(run_dir), stage_entries(run_dir)
        for label, run in results["methods"].items():
            trained = [stage for stage in run["stages"] if stage.get("train_dir")]
            if not trained:
                continue
            summary = summarize_method(results, label)
            prefix = entries[trained[-1]["train_dir"]]["agreement"]["prefix"]  # the pilot's one stage trains skill
            values = {"prefix": prefix, "near_end": summary["near_end"], "prior_end": summary["prior_end"]}
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
            cells = [diff(paired_difference(measures[k], per_seed["sdft"][k])) for k in PILOT_MEASURES]
            rows.append([skill, f"{setting} − sdft", *cells])
    return md_table(["skill", "difference", *PILOT_MEASURES.values()], rows)


def pilot_text(smoke: bool = False) -> str:
    return (
        "## Pilots: SDFT's rollout temperature and its teacher's temperature (validation splits; after the "
        "skill's one 12-step stage)\n\n"
        + pilot_table(smoke)
        + "\n\nPaired by seed against sdft (mean [95% interval], n pairs):\n\n"
        + pilot_differences(smoke)
        + f"\n\n{common.machines_line(RECIPES.results, 'pilot ')}\n"
    )
