"""The forgetting benchmark: does SDFT forget less than SFT (and seqkd), over several seeds and skill sequences?

    .venv/bin/python benchmarks/forgetting.py            # everything, resumable: tune → probe → run → summary
    .venv/bin/python benchmarks/forgetting.py --jobs 2   # the same, two units side by side on one core each
    .venv/bin/python benchmarks/forgetting.py tune       # the learning-rate sweep on the validation split
    .venv/bin/python benchmarks/forgetting.py run --seeds 0   # the test runs of seed 0 (all sequences)
    .venv/bin/python benchmarks/forgetting.py probe      # `selfdistill probe` on every skill (the predictor check)
    .venv/bin/python benchmarks/forgetting.py summary    # the table, from the results files alone

Everything below was fixed before any result was seen, and is not changed after:

- **Sequences** (``SEQUENCES``): four three-stage sequences A → B → C over the seven project-generated skills
  (``selfdistill.evaluation.tasks.procedural``), each skill in at least one sequence. ``s1`` extends the seed's scenario
  (record_json → ticket_line) with a worked procedure; the others mix the kinds so every skill follows another.
- **Methods**: SFT, SDFT (chat-turn teacher, no skipped tokens: at 135M the chat-turn teacher is the one that
  copies a demonstration, and the format decision sits in the first tokens) and seqkd (the same teacher generates,
  then SFT). Batch 8, ``STEPS`` steps per stage, fp32 compute on every machine, the other options at their
  defaults.
- **Learning rate**: per method, one of ``LRS``, chosen by ``tune``: the first stage of ``s1`` scored on its
  *validation* split (disjoint from test), seed 0, with the near-prior tasks and prior_probe; the chosen lr maximises
  ``ACC + (near-prior average + prior average) / 2`` at the end (learning and keeping weigh the same); ties go to
  the smaller lr. The test runs never see validation items and the tuning never sees test items.
- **Seeds** 0, 1, 2; the seed sets training and sampling; the evaluation subsets are the same for every seed (paired).
- **Evaluation after every stage**: each stage task (``LIMIT`` test items), the near-prior tasks of the sequence's
  skills (``LIMIT`` items each: what the base model already does on those skills' surface), and the prior suite
  ``PRIOR`` (prior_probe, arc_easy, piqa, hellaswag, and an 8-prompt IFEval subset with a 128-token budget).
  24 items a task is few (a single task's score has a standard error near 0.1); the near-prior and prior
  averages pool several tasks, and the seeds are paired, which is what the comparisons rest on.

Run order is seed-major (seed 0 of every sequence, then seed 1, ...), so a stopped benchmark holds whole seeds.
Each sequence is a `selfdistill continual` plan (``benchmarks/forgetting/<name>.yaml``, written by this script) run
into ``benchmarks/results/forgetting/<name>/``; a rerun skips what is done. Trained weights are deleted as soon as
no later stage needs them; every stage's metrics.jsonl, eval.json and predictions stay on disk (out of git), and
results.json, the run's ``digest.json`` (what the summaries need of those files, ``digest.py``), report and plans are
committed, so the tables can be regenerated and a later session can continue (a run cut mid-way restarts that run).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import common
import tyro
from common import RESULTS_ROOT, ROOT, Unit, Where, diff, md_table, pm, read_json, write_json

from selfdistill.continual import metrics
from selfdistill.continual.plan import format_value
from selfdistill.continual.results import load_results

COMMITTED = Where(RESULTS_ROOT / "forgetting", ROOT / "forgetting")
SequenceName = Literal["s1", "s2", "s3", "s4"]
SEQUENCES: dict[str, tuple[str, str, str]] = {
    "s1": ("record_json", "ticket_line", "arith_steps"),
    "s2": ("csv_row", "shipping_zone", "fact_doc"),
    "s3": ("extract_trip", "arith_steps", "shipping_zone"),
    "s4": ("ticket_line", "extract_trip", "csv_row"),
}
SEEDS = (0, 1, 2)
LRS = (3.0e-5, 1.0e-4, 3.0e-4)
STEPS = 12
LIMIT = 24
METHODS: dict[str, dict] = {
    "sft": {},
    "sdft": {"teacher_template": "chat-turn", "skip_first_tokens": 0},
    "seqkd": {"teacher_template": "chat-turn"},
}
# fp32 pinned: `auto` would pick bf16 autocast on CPUs with native bf16 and fp32 elsewhere, so seeds run on two
# machine kinds would train differently (the first runs, on a CPU without bf16, resolved `auto` to fp32). No
# `prepack` key: every recorded run sampled with the stock fp32 kernels, which `auto` keeps in fp32, and a key the
# recorded plans lack would make every resume refuse their run directories (test_recipe_benchmark checks both)
TRAIN = {"batch_size": 8, "max_new_tokens": 48, "save_every": 0, "precision": "fp32"}
PRIOR = [
    {"task": "prior_probe"},
    {"task": "arc_easy", "limit": LIMIT},
    {"task": "piqa", "limit": LIMIT},
    {"task": "hellaswag", "limit": LIMIT},
    {"task": "ifeval", "limit": 8, "max_new_tokens": 128},
]
TUNE = {"stages": SEQUENCES["s1"][:1], "prior": [{"task": "prior_probe"}], "limit": LIMIT}
METRICS = ("acc", "bwt", "prior_drop", "near_drop")
METRIC_HEADER = ["ACC", "BWT", "prior drop", "near-prior drop"]


@dataclass
class Args:
    """The forgetting benchmark: does SDFT forget less than SFT (and seqkd), over several seeds and skill sequences?"""

    command: tyro.conf.Positional[Literal["all", "tune", "run", "probe", "summary"]] = "all"
    """all (tune → probe → run → summary, resumable), tune, run, probe or summary (from the results files alone)."""
    seeds: list[int] = field(default_factory=lambda: list(SEEDS))
    """Which seeds to run."""
    sequences: list[SequenceName] = field(default_factory=lambda: list(SEQUENCES))
    """Which sequences to run."""
    probe_limit: int = 16
    """Examples per skill in `selfdistill probe`."""
    jobs: int = 1
    """Run this many sequence × seed units side by side, each pinned to its own cores (2 on a 2-core machine: the
    same numbers, measured 1.34x the throughput); the tuning run stays one process."""
    results: Path = COMMITTED.results
    """Results directory (default: the committed one); another directory gets its own plans."""
    side_by_side: int = 0
    """Set by --jobs on the units it starts: how many ran side by side (recorded with the wall time)."""
    cores: list[int] | None = None
    """Set by --jobs on the units it starts: the cores this unit runs on."""


def near(skills) -> list[str]:
    return [f"near_{skill}" for skill in skills]


def plan_dict(output: Path, skills, methods: dict, seeds, split: str, prior: list, limit: int) -> dict:
    """A continual plan over ``skills`` with the benchmark's training and evaluation settings."""
    return {
        "model": "smollm2-135m-instruct",
        "output": str(output),
        "seeds": list(seeds),
        "train": dict(TRAIN),
        "methods": methods,
        "stages": [{"task": skill, "steps": STEPS} for skill in skills],
        "eval": {"limit": limit, "seed": 0, "split": split, "batch_size": 24, "near": near(skills), "prior": prior},
    }


def tune_plan(where: Where = COMMITTED) -> Path:
    methods = {m: {**o, "sweep": {"lr": list(LRS)}} for m, o in METHODS.items()}
    raw = plan_dict(where.results / "tune", TUNE["stages"], methods, [0], "validation", TUNE["prior"], TUNE["limit"])
    return common.write_plan(
        where.plans, "tune", raw, "Learning-rate sweep per method on the validation split (seed 0)."
    )


def sequence_plan(name: str, lrs: dict[str, float], where: Where = COMMITTED) -> Path:
    methods = {m: {**o, "lr": lrs[m]} for m, o in METHODS.items()}
    raw = plan_dict(where.results / name, SEQUENCES[name], methods, SEEDS, "test", PRIOR, LIMIT)
    lr_text = ", ".join(f"{m} {format_value(lr)}" for m, lr in lrs.items())
    return common.write_plan(
        where.plans, name, raw, f"Sequence {name}: {' → '.join(SEQUENCES[name])}; tuned lr: {lr_text}."
    )


def objective(summary: dict) -> float:
    """The pre-registered tuning score: ACC + (near-prior average + prior average) / 2, at the end."""
    return summary["acc"] + (summary["near_end"] + summary["prior_end"]) / 2


def chosen_lrs(results_dir: Path = COMMITTED.results) -> dict[str, float]:
    """Per method, the tuned lr (from the tuning run's results); raises if tuning is not finished."""
    results = load_results(results_dir / "tune")
    best: dict[str, tuple[float, float]] = {}
    for label, record in results["methods"].items():
        s = metrics.summarize_method(results, label)
        if s["stages_done"] < len(TUNE["stages"]):
            raise RuntimeError(f"tuning is not finished ({label} has {s['stages_done']} stages); run `tune` first")
        method, lr = record["config"]["method"], float(record["config"]["lr"])
        score = objective(s)
        if (
            method not in best
            or score > best[method][1] + 1e-12
            or (abs(score - best[method][1]) <= 1e-12 and lr < best[method][0])
        ):
            best[method] = (lr, score)
    return {method: lr for method, (lr, _) in best.items()}


def tuned_lrs(results_dir: Path = COMMITTED.results) -> dict[str, float]:
    """``chosen_lr.json``, which `tune` writes; exits with the command to run when it is missing."""
    lrs = read_json(results_dir / "chosen_lr.json")
    if lrs is None:
        sys.exit("no tuned learning rates yet: run `benchmarks/forgetting.py tune` first")
    return lrs


# ---------------------------------------------------------------- commands


def cmd_tune(where: Where) -> None:
    start = time.perf_counter()
    ran = common.run_plan_file(tune_plan(where))
    lrs = chosen_lrs(where.results)
    write_json(where.results / "chosen_lr.json", lrs)
    print("chosen learning rates:", ", ".join(f"{m} {format_value(lr)}" for m, lr in lrs.items()))
    if ran:
        common.log_time("tune", start, where.results)


def unit_command(unit: Unit, jobs: int, cores: list[int], where: Where = COMMITTED) -> list[str]:
    """The command line that runs one unit in its own process, on ``cores``, into the same results directory."""
    name, seed = unit
    cmd = [sys.executable, str(Path(__file__).resolve())]
    if name == "probe":
        cmd += ["probe"]
    else:
        cmd += ["run", "--seeds", str(seed), "--sequences", name, "--side-by-side", str(jobs)]
    return cmd + ["--results", str(where.results), "--cores", *map(str, cores)]


def cmd_run(args: Args, where: Where) -> None:
    lrs = tuned_lrs(where.results)
    if args.jobs > 1:
        units: list[Unit] = [(name, seed) for seed in args.seeds for name in args.sequences]
        if args.command == "all":
            units.append(("probe", None))
        common.run_side_by_side(units, args.jobs, lambda u, j, c: unit_command(u, j, c, where), where.results)
    else:
        how = {"side_by_side": args.side_by_side, "threads": common.torch_threads()} if args.side_by_side else {}
        for seed in args.seeds:
            for name in args.sequences:
                start = time.perf_counter()
                if common.run_plan_file(sequence_plan(name, lrs, where), seeds=[seed]):
                    common.log_time(f"{name} seed {seed}", start, where.results, **how)
    if not args.side_by_side:  # a unit started by run_side_by_side leaves the summary to its parent
        cmd_summary(where)


def probe_row(skill: str, limit: int) -> dict:
    """`selfdistill probe` on ``skill`` with SDFT's chat-turn teacher, reduced to the row ``probe.json`` keeps."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        argv = ["probe", "--task", skill, "--limit", str(limit), "--templates", "chat-turn", "--skip-first-tokens"]
        common.selfdistill([*argv, "0", "--no-progress", "--output", str(out)])
        report = json.loads(out.read_text())
    row = report["templates"]["chat-turn"]
    return {
        "student": report["student"]["score"],
        "teacher": row["teacher"],
        "gap": row["gap"],
        "gap_se": row["gap_stderr"],
        "kl": row["kl"],
        "n": report["n"],
        "verdict": report["verdict"],
    }


def cmd_probe(args: Args, where: Where) -> None:
    path = where.results / "probe.json"
    out = read_json(path, {})
    for skill in sorted({s for seq in SEQUENCES.values() for s in seq}):
        if skill not in out:
            out[skill] = probe_row(skill, args.probe_limit)
            write_json(path, out)


# ---------------------------------------------------------------- summary


def summary_rows(results_dir: Path = COMMITTED.results) -> tuple[list[list[str]], list[list[str]], dict, dict]:
    """Table rows, paired-difference rows, the summary.json dict, and per sequence setting → scalar → seed →
    value (for the plot)."""
    rows, diffs, raw, per_sequence = [], [], {}, {}
    for name in SEQUENCES:
        if not (results_dir / name / "results.json").is_file():
            continue
        results = load_results(results_dir / name)
        agg = metrics.aggregate(results)
        raw[name] = {}
        per_sequence[name] = {setting: v["per_seed"] for setting, v in agg.items()}
        for setting, v in agg.items():
            sc = v["scalars"]
            raw[name][setting] = {k: list(sc[k]) for k in METRICS}
            raw[name][setting]["per_seed"] = {k: v["per_seed"][k] for k in METRICS}
            rows.append([name, setting, f"{len(v['seeds'])}/{len(v['runs'])}", *(pm(sc[k]) for k in METRICS)])
        for pair in metrics.comparisons(results, agg):
            diffs.append([name, f"{pair['setting']} − {pair['reference']}", *(diff(pair[k]) for k in METRICS)])
    return rows, diffs, raw, per_sequence


def pooled(raw: dict) -> list[list[str]]:
    """Every (sequence, seed) pair pooled: the paired difference of each method against SFT over all of them."""
    out = []
    for method in ("sdft", "seqkd"):
        cells = ["all sequences", f"{method} − sft"]
        for key in METRICS:
            a, b = {}, {}
            for name, settings in raw.items():
                if method in settings and "sft" in settings:
                    for seed, value in settings[method]["per_seed"][key].items():
                        a[f"{name}/{seed}"] = value
                    for seed, value in settings["sft"]["per_seed"][key].items():
                        b[f"{name}/{seed}"] = value
            cells.append(diff(metrics.paired_difference(a, b)) if a else "—")
        out.append(cells)
    return out


def tune_table(results_dir: Path = COMMITTED.results) -> str:
    """The tuning sweep: per setting, the validation score of the skill, the near-prior and prior averages, the
    objective; the chosen lr per method is marked (only once every setting has finished)."""
    if not (results_dir / "tune" / "results.json").is_file():
        return ""
    results = load_results(results_dir / "tune")
    try:
        chosen = chosen_lrs(results_dir)
    except RuntimeError:
        chosen = {}
    rows = []
    for label, record in results["methods"].items():
        s = metrics.summarize_method(results, label)
        if s["stages_done"] < len(TUNE["stages"]):
            rows.append([record["setting"], "pending", "", "", "", ""])
            continue
        mark = " **chosen**" if chosen.get(record["config"]["method"]) == float(record["config"]["lr"]) else ""
        scores = (s["acc"], s["near_end"], s["prior_end"], objective(s))
        rows.append([record["setting"] + mark, *(f"{x:.3f}" for x in scores), f"{s['stages_done']}"])
    skill = TUNE["stages"][0]
    return md_table(["setting", f"{skill} (validation)", "near-prior", "prior_probe", "objective", "stages"], rows)


def skill_gains(results_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Skill → method → "sequence/seed" → what training on the skill gave it (score right after its stage minus
    right before)."""
    gains: dict[str, dict[str, dict[str, float]]] = {}
    for name, skills in SEQUENCES.items():
        if not (results_dir / name / "results.json").is_file():
            continue
        results = load_results(results_dir / name)
        for v in metrics.aggregate(results).values():
            method = (results["methods"][v["runs"][0]].get("config") or {}).get("method")
            for seed, label in v["seeds"].items():
                g = metrics.learning_gain(metrics.matrix_from_results(results, label, list(skills)))
                for j, skill in enumerate(skills):
                    gains.setdefault(skill, {}).setdefault(method, {})[f"{name}/{seed}"] = float(g[j])
    return gains


def probe_table(results_dir: Path = COMMITTED.results) -> str:
    """Per skill: the probe's teacher − student gap (before training) next to SDFT − SFT in what training on that
    skill gave it, pooled over the sequences and seeds that have it. Does the probe tell in advance whether SDFT
    pays off?"""
    probe = read_json(results_dir / "probe.json")
    if probe is None:
        return ""
    gains = skill_gains(results_dir)
    rows = []
    for skill, p in sorted(probe.items()):
        by = gains.get(skill, {})
        d = metrics.paired_difference(by.get("sdft", {}), by.get("sft", {})) if by else None
        gap = f"{p['gap']:+.2f} ± {p['gap_se'] or 0:.2f}"
        rows.append([skill, f"{p['student']:.2f}", f"{p['teacher']:.2f}", gap, f"{p['kl']:.3f}", diff(d) if d else "—"])
    return md_table(["skill", "probe student", "probe teacher", "gap ± se", "KL", "SDFT − SFT gain on the skill"], rows)


def cmd_summary(where: Where = COMMITTED) -> None:
    """Print the tables and write summary.md, summary.json and summary_pareto.png (and the tuning and probe
    tables), from results.json, probe.json and wall_times.jsonl alone."""
    results_dir = where.results
    rows, diffs, raw, per_sequence = summary_rows(results_dir)
    for title, table, file in (
        ("Learning-rate sweep", tune_table(results_dir), "tune_summary.md"),
        ("The probe as a predictor", probe_table(results_dir), "probe_summary.md"),
    ):
        if table:
            print(f"## {title}\n\n{table}\n")
            (results_dir / file).write_text(table + "\n")
    if not rows:
        print("no test runs yet")
        return
    text = "## Per sequence and method (mean ± std over finished seeds)\n\n"
    text += md_table(["sequence", "method", "seeds", *METRIC_HEADER], rows)
    text += "\n\n## Paired differences against SFT (mean [95% t-interval] over seeds)\n\n"
    text += md_table(["sequence", "difference", *METRIC_HEADER], diffs + pooled(raw))
    text += "\n\n" + common.machines_line(results_dir) + "\n"
    print(text)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "summary.md").write_text(text)
    write_json(results_dir / "summary.json", raw)
    title = "Forgetting benchmark, test splits"
    common.plot_sequences(per_sequence, results_dir / "summary_pareto.png", title, SEQUENCES)


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    common.pin_to(args.cores)
    if args.jobs < 1:
        common.usage_error("forgetting.py", f"--jobs must be at least 1, got {args.jobs}")
    if args.jobs > 1:  # before the tuning run, not after it
        try:
            common.core_slots(args.jobs, common.usable_cores())
        except ValueError as e:
            common.usage_error("forgetting.py", str(e))
    where = COMMITTED.elsewhere(args.results)
    common.setup_logging()
    if args.command in ("all", "tune") and not (where.results / "chosen_lr.json").is_file():
        cmd_tune(where)
    if args.command == "probe" or (args.command == "all" and args.jobs == 1):  # minutes, before the hours of runs
        cmd_probe(args, where)
    if args.command in ("all", "run"):
        cmd_run(args, where)
    if args.command == "summary":
        cmd_summary(where)


if __name__ == "__main__":
    main()
