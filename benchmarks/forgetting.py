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
no later stage needs them; results.json, every stage's metrics.jsonl, eval.json and predictions stay, and are
committed, so the tables can be regenerated and a later session can continue (a run cut mid-way restarts that run).
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

import yaml

from selfdistill.continual.metrics import aggregate, comparisons, mean_std, summarize_method
from selfdistill.continual.plan import format_value, load_plan
from selfdistill.continual.report import load_results, write_report
from selfdistill.continual.runner import ContinualConfig, run_plan
from selfdistill.environment import cpu_model

ROOT = Path(__file__).resolve().parent
PLANS = ROOT / "forgetting"
RESULTS = ROOT / "results" / "forgetting"

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

log = logging.getLogger("forgetting")


def use_results(path: Path) -> None:
    """Read and write ``path`` instead of the committed results; a directory other than the committed one keeps its
    plans in ``path/plans`` so that the committed plans (which name the committed output) stay as they are."""
    global RESULTS, PLANS
    path = path.resolve()
    if path != RESULTS.resolve():
        RESULTS, PLANS = path, path / "plans"


def _near(skills) -> list[str]:
    return [f"near_{skill}" for skill in skills]


def _plan(name: str, skills, methods: dict, seeds, split: str, prior: list, limit: int) -> dict:
    return {
        "model": "smollm2-135m-instruct",
        "output": str(RESULTS / name),
        "seeds": list(seeds),
        "train": dict(TRAIN),
        "methods": methods,
        "stages": [{"task": skill, "steps": STEPS} for skill in skills],
        "eval": {"limit": limit, "seed": 0, "split": split, "batch_size": 24, "near": _near(skills), "prior": prior},
    }


def _write_plan(name: str, raw: dict, comment: str) -> Path:
    PLANS.mkdir(parents=True, exist_ok=True)
    path = PLANS / f"{name}.yaml"
    text = f"# {comment}\n# Written by benchmarks/forgetting.py; run it with that script (or selfdistill continual).\n"
    text += yaml.safe_dump(raw, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def tune_plan() -> Path:
    methods = {m: {**o, "sweep": {"lr": list(LRS)}} for m, o in METHODS.items()}
    raw = _plan("tune", TUNE["stages"], methods, [0], "validation", TUNE["prior"], TUNE["limit"])
    return _write_plan("tune", raw, "Learning-rate sweep per method on the validation split (seed 0).")


def objective(summary: dict) -> float:
    """The pre-registered tuning score: ACC + (near-prior average + prior average) / 2, at the end."""
    return summary["acc"] + (summary["near_end"] + summary["prior_end"]) / 2


def chosen_lrs() -> dict[str, float]:
    """Per method, the tuned lr (from the tuning run's results); raises if tuning is not finished."""
    results = load_results(RESULTS / "tune")
    best: dict[str, tuple[float, float]] = {}
    for label, record in results["methods"].items():
        s = summarize_method(results, label)
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


def sequence_plan(name: str, lrs: dict[str, float]) -> Path:
    methods = {m: {**o, "lr": lrs[m]} for m, o in METHODS.items()}
    raw = _plan(name, SEQUENCES[name], methods, SEEDS, "test", PRIOR, LIMIT)
    lr_text = ", ".join(f"{m} {format_value(lr)}" for m, lr in lrs.items())
    return _write_plan(name, raw, f"Sequence {name}: {' → '.join(SEQUENCES[name])}; tuned lr: {lr_text}.")


def _run(path: Path, seeds=None) -> bool:
    """Run or resume the plan at ``path``; True when a stage was trained or evaluated (a resume that finds every
    stage done only rewrites the report, and its few seconds are no wall time worth recording)."""
    plan = load_plan(path)
    record = plan.output / "results.json"
    before = record.read_bytes() if record.is_file() else None
    cfg = ContinualConfig(plan=path, progress=False, keep_models=False, only_seeds=list(seeds) if seeds else None)
    run_plan(plan, cfg)
    return (record.read_bytes() if record.is_file() else None) != before


def _log_time(what: str, start: float, results: Path | None = None, **extra) -> None:
    """One line in ``results/wall_times.jsonl``: what finished, how long it took, and on which CPU (``extra``: how
    it ran, e.g. ``side_by_side=2, threads=1``)."""
    results = results or RESULTS
    line = {
        "what": what,
        "seconds": round(time.perf_counter() - start, 1),
        "cpu": cpu_model(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }
    results.mkdir(parents=True, exist_ok=True)
    with (results / "wall_times.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    log.info("%s: %.0f s", what, line["seconds"])


def cmd_tune(_args) -> None:
    start = time.perf_counter()
    ran = _run(tune_plan())
    lrs = chosen_lrs()
    (RESULTS / "chosen_lr.json").write_text(json.dumps(lrs, indent=1) + "\n")
    print("chosen learning rates:", ", ".join(f"{m} {format_value(lr)}" for m, lr in lrs.items()))
    if ran:
        _log_time("tune", start)


def cmd_run(args) -> None:
    lrs = json.loads((RESULTS / "chosen_lr.json").read_text()) if (RESULTS / "chosen_lr.json").is_file() else None
    if lrs is None:
        sys.exit("no tuned learning rates yet: run `benchmarks/forgetting.py tune` first")
    if args.jobs > 1:
        units = [(name, seed) for seed in args.seeds for name in args.sequences]
        if args.command == "all":
            units.append(("probe", None))
        run_side_by_side(units, args.jobs)
    else:
        how = {"side_by_side": args.side_by_side, "threads": torch_threads()} if args.side_by_side else {}
        for seed in args.seeds:
            for name in args.sequences:
                start = time.perf_counter()
                if _run(sequence_plan(name, lrs), seeds=[seed]):
                    _log_time(f"{name} seed {seed}", start, **how)
    if not args.side_by_side:  # a unit started by run_side_by_side leaves the summary to its parent
        cmd_summary(args)


# ---------------------------------------------------------------- units side by side


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def next_unit(pending: list[tuple[str, int | None]], running: set[str]) -> tuple[str, int | None] | None:
    """The first pending unit whose sequence is not running: two seeds of one sequence write one results.json (and
    the first computes the base model's scores that the others reuse), so they never run at the same time."""
    return next((unit for unit in pending if unit[0] not in running), None)


def usable_cores() -> list[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def core_slots(jobs: int, cores: list[int]) -> list[list[int]]:
    """``jobs`` disjoint groups of the cores this process may use, as even as they divide (at least one core each)."""
    if jobs > len(cores):
        raise ValueError(f"--jobs {jobs} needs at least {jobs} cores; this process may use {len(cores)}")
    per = len(cores) // jobs
    return [cores[i * per : (i + 1) * per] for i in range(jobs)]


def unit_command(unit: tuple[str, int | None], jobs: int, cores: list[int]) -> list[str]:
    """The command line that runs one unit in its own process, on ``cores``, into the same results directory."""
    name, seed = unit
    cmd = [sys.executable, str(Path(__file__).resolve())]
    if name == "probe":
        cmd += ["probe"]
    else:
        cmd += ["run", "--seeds", str(seed), "--sequences", name, "--side-by-side", str(jobs)]
    return cmd + ["--results", str(RESULTS), "--cores", *map(str, cores)]


def run_side_by_side(units: list[tuple[str, int | None]], jobs: int) -> None:
    """Run the units ``jobs`` at a time, each in its own process pinned to its own cores with as many threads.

    The arithmetic does not change with the thread count (fp32: on one machine, s2 seed 0 run with 1 thread beside
    another unit and with 2 threads alone agreed in all 132 evaluation cells, docs/science.md); what changes is the
    wall time: two 1-core processes got 1.34x the throughput of one 2-thread process there. Each unit's output goes to
    ``results/logs/``; the whole span is one line in ``wall_times.jsonl``."""
    import subprocess

    slots = core_slots(jobs, usable_cores())
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(units), {}, []
    start = time.perf_counter()
    while pending or running:
        free = [slot for slot in range(jobs) if slot not in {r[1] for r in running.values()}]
        while free and (unit := next_unit(pending, {r[0][0] for r in running.values()})):
            pending.remove(unit)
            slot = free.pop(0)
            name = unit[0] if unit[1] is None else f"{unit[0]}_seed{unit[1]}"
            env = {**os.environ, "OMP_NUM_THREADS": str(len(slots[slot])), "MKL_NUM_THREADS": str(len(slots[slot]))}
            with (logs / f"{name}.log").open("w") as out:
                proc = subprocess.Popen(
                    unit_command(unit, jobs, slots[slot]), stdout=out, stderr=subprocess.STDOUT, env=env
                )
            running[proc] = (unit, slot, time.perf_counter(), logs / f"{name}.log")
            log.info("started %s on cores %s (%d pending)", name, slots[slot], len(pending))
        if not running:
            break
        time.sleep(2)
        for proc, (unit, _slot, t0, path) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[proc]
            minutes = (time.perf_counter() - t0) / 60
            if proc.returncode:
                failed.append(unit)
                tail = path.read_text().splitlines()[-5:]
                log.error(
                    "%s failed (exit %d) after %.1f min; the end of %s:\n%s",
                    unit,
                    proc.returncode,
                    minutes,
                    path,
                    "\n".join(tail),
                )
            else:
                log.info("finished %s in %.1f min", unit, minutes)
    what = " ".join(f"{n} seed {s}" if s is not None else n for n, s in units)
    _log_time(f"{len(units)} units, {jobs} side by side: {what}", start, span=True, side_by_side=jobs)
    if failed:
        sys.exit(f"{len(failed)} unit(s) failed: {failed}; their logs are in {logs}; a rerun resumes them")


def cmd_probe(args) -> None:
    from selfdistill.evaluation.probe import ProbeConfig, run_probe

    skills = sorted({s for seq in SEQUENCES.values() for s in seq})
    out = {}
    path = RESULTS / "probe.json"
    if path.is_file():
        out = json.loads(path.read_text())
    for skill in skills:
        if skill in out:
            continue
        report = run_probe(
            ProbeConfig(
                task=skill, limit=args.probe_limit, templates=["chat-turn"], skip_first_tokens=0, progress=False
            )
        )
        row = report["templates"]["chat-turn"]
        out[skill] = {
            "student": report["student"]["score"],
            "teacher": row["teacher"],
            "gap": row["gap"],
            "gap_se": row["gap_stderr"],
            "kl": row["kl"],
            "n": report["n"],
            "verdict": report["verdict"],
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")


# ---------------------------------------------------------------- summary


def _pm(value) -> str:
    mean, std, n = value
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f} (n={n})"


def _diff(d) -> str:
    if not math.isfinite(d["mean"]):
        return "—"
    if not math.isfinite(d["lo"]):
        return f"{d['mean']:+.3f} (n={d['n']})"
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def summary_rows() -> tuple[list[list[str]], list[list[str]], dict, dict]:
    """Table rows, paired-difference rows, the summary.json dict, and per sequence setting → scalar → seed →
    value (for the plot)."""
    rows, diffs, raw, per_sequence = [], [], {}, {}
    for name in SEQUENCES:
        run_dir = RESULTS / name
        if not (run_dir / "results.json").is_file():
            continue
        results = load_results(run_dir)
        write_report(run_dir)
        agg = aggregate(results)
        raw[name] = {}
        per_sequence[name] = {setting: v["per_seed"] for setting, v in agg.items()}
        for setting, v in agg.items():
            sc = v["scalars"]
            raw[name][setting] = {k: list(sc[k]) for k in ("acc", "bwt", "prior_drop", "near_drop")}
            raw[name][setting]["per_seed"] = {k: v["per_seed"][k] for k in ("acc", "bwt", "prior_drop", "near_drop")}
            rows.append(
                [
                    name,
                    setting,
                    f"{len(v['seeds'])}/{len(v['runs'])}",
                    _pm(sc["acc"]),
                    _pm(sc["bwt"]),
                    _pm(sc["prior_drop"]),
                    _pm(sc["near_drop"]),
                ]
            )
        for pair in comparisons(results, agg):
            diffs.append(
                [
                    name,
                    f"{pair['setting']} − {pair['reference']}",
                    _diff(pair["acc"]),
                    _diff(pair["bwt"]),
                    _diff(pair["prior_drop"]),
                    _diff(pair["near_drop"]),
                ]
            )
    return rows, diffs, raw, per_sequence


def _pooled(raw: dict) -> list[list[str]]:
    """Every (sequence, seed) pair pooled: the paired difference of each method against SFT over all of them."""
    from selfdistill.continual.metrics import paired_difference

    out = []
    for method in ("sdft", "seqkd"):
        cells = ["all sequences", f"{method} − sft"]
        for key in ("acc", "bwt", "prior_drop", "near_drop"):
            a, b = {}, {}
            for name, settings in raw.items():
                if method in settings and "sft" in settings:
                    for seed, value in settings[method]["per_seed"][key].items():
                        a[f"{name}/{seed}"] = value
                    for seed, value in settings["sft"]["per_seed"][key].items():
                        b[f"{name}/{seed}"] = value
            cells.append(_diff(paired_difference(a, b)) if a else "—")
        out.append(cells)
    return out


def _md(header, rows) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def tune_table() -> str:
    """The tuning sweep: per setting, the validation score of the skill, the near-prior and prior averages, the
    objective; the chosen lr per method is marked (only once every setting has finished)."""
    if not (RESULTS / "tune" / "results.json").is_file():
        return ""
    results = load_results(RESULTS / "tune")
    try:
        chosen = chosen_lrs()
    except RuntimeError:
        chosen = {}
    rows = []
    for label, record in results["methods"].items():
        s = summarize_method(results, label)
        if s["stages_done"] < len(TUNE["stages"]):
            rows.append([record["setting"], "pending", "", "", "", ""])
            continue
        method, lr = record["config"]["method"], float(record["config"]["lr"])
        mark = " **chosen**" if chosen.get(method) == lr else ""
        rows.append(
            [
                record["setting"] + mark,
                f"{s['acc']:.3f}",
                f"{s['near_end']:.3f}",
                f"{s['prior_end']:.3f}",
                f"{objective(s):.3f}",
                f"{s['stages_done']}",
            ]
        )
    skill = TUNE["stages"][0]
    return _md(["setting", f"{skill} (validation)", "near-prior", "prior_probe", "objective", "stages"], rows)


def probe_table() -> str:
    """Per skill: the probe's teacher − student gap (before training) next to SDFT − SFT in what training on that
    skill gave it (its score right after its stage minus right before), pooled over the sequences and seeds that
    have it. Does the probe tell in advance whether SDFT pays off?"""
    from selfdistill.continual.metrics import learning_gain, matrix_from_results, paired_difference

    path = RESULTS / "probe.json"
    if not path.is_file():
        return ""
    probe = json.loads(path.read_text())
    gains: dict[str, dict[str, dict[str, float]]] = {}  # skill → method → "seq/seed" → gain
    for name, skills in SEQUENCES.items():
        if not (RESULTS / name / "results.json").is_file():
            continue
        results = load_results(RESULTS / name)
        agg = aggregate(results)
        for v in agg.values():
            method = (results["methods"][v["runs"][0]].get("config") or {}).get("method")
            for seed, label in v["seeds"].items():
                g = learning_gain(matrix_from_results(results, label, list(skills)))
                for j, skill in enumerate(skills):
                    gains.setdefault(skill, {}).setdefault(method, {})[f"{name}/{seed}"] = float(g[j])
    rows = []
    for skill, p in sorted(probe.items()):
        by = gains.get(skill, {})
        d = paired_difference(by.get("sdft", {}), by.get("sft", {})) if by else None
        rows.append(
            [
                skill,
                f"{p['student']:.2f}",
                f"{p['teacher']:.2f}",
                f"{p['gap']:+.2f} ± {p['gap_se'] or 0:.2f}",
                f"{p['kl']:.3f}",
                _diff(d) if d else "—",
            ]
        )
    return _md(["skill", "probe student", "probe teacher", "gap ± se", "KL", "SDFT − SFT gain on the skill"], rows)


def machines_line(results: Path | None = None, prefix: str = "") -> str:
    """Which CPU ran each sequence and seed (from ``results/wall_times.jsonl``, the lines whose ``what`` starts with
    ``prefix``): pairs within a seed share a machine."""
    path = (results or RESULTS) / "wall_times.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    by_cpu: dict[str, list[str]] = {}
    for line in lines:
        if line["what"] != "tune" and not line.get("span") and line["what"].startswith(prefix):
            by_cpu.setdefault(line["cpu"], []).append(line["what"])
    if not by_cpu:
        return f"CPU: {cpu_model()}"
    return "CPUs: " + "; ".join(f"{cpu}: {', '.join(runs)}" for cpu, runs in by_cpu.items())


def plot_sequences(seqs: dict[str, dict[str, dict]], path: Path, title: str, highlight: str | None = None) -> None:
    """Learning against retention, one column per sequence: ACC at the end against the prior suite's average (top
    row) and the near-prior average (bottom row), mean ± std over each setting's finished seeds; the dashed line is
    the base model. ``seqs``: sequence → setting → scalar → seed → value (``aggregate``'s per_seed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(seqs)
    settings = list(dict.fromkeys(k for by_setting in seqs.values() for k in by_setting))
    figure = Figure(figsize=(3.4 * len(names), 6.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(names), squeeze=False)
    for col, name in enumerate(names):
        for row, (end, drop, label) in enumerate(
            (("prior_end", "prior_drop", "prior suite"), ("near_end", "near_drop", "near-prior tasks"))
        ):
            ax = axes[row][col]
            for k, values in seqs[name].items():
                x, x_std, _ = mean_std(list(values[end].values()))
                y, y_std, n = mean_std(list(values["acc"].values()))
                if not (math.isfinite(x) and math.isfinite(y)):
                    continue
                ax.errorbar(
                    [x],
                    [y],
                    xerr=x_std if n > 1 else None,
                    yerr=y_std if n > 1 else None,
                    capsize=3,
                    marker="*" if k == highlight else "o",
                    markersize=10 if k == highlight else 7,
                    linestyle="none",
                    color=f"C{settings.index(k) % 10}",
                    label=f"{k} (n={n})",
                )
            bases = [v[end][seed] + v[drop][seed] for v in seqs[name].values() for seed in v[end]]
            if bases:  # the base model's average (end + drop), the same for every run of the sequence
                ax.axvline(sum(bases) / len(bases), color="0.5", linestyle="--", linewidth=1)
            ax.set_xlabel(f"{label}: average at end")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("ACC at end")
            if row == 0:
                ax.set_title(f"{name}: {' → '.join(SEQUENCES.get(name, ()))}", fontsize=9)
                if seqs[name]:
                    ax.legend(fontsize=7, loc="best")
    figure.suptitle(
        f"{title}: ACC against what was kept, mean ± std over n seeds (dashed: the base model; up and right is better)"
    )
    figure.savefig(path, dpi=110)


def cmd_summary(_args) -> None:
    rows, diffs, raw, per_sequence = summary_rows()
    tune = tune_table()
    if tune:
        print("## Learning-rate sweep\n\n" + tune + "\n")
        (RESULTS / "tune_summary.md").write_text(tune + "\n")
    probe = probe_table()
    if probe:
        print("## The probe as a predictor\n\n" + probe + "\n")
        (RESULTS / "probe_summary.md").write_text(probe + "\n")
    if not rows:
        print("no test runs yet")
        return
    text = "## Per sequence and method (mean ± std over finished seeds)\n\n"
    text += _md(["sequence", "method", "seeds", "ACC", "BWT", "prior drop", "near-prior drop"], rows)
    text += "\n\n## Paired differences against SFT (mean [95% t-interval] over seeds)\n\n"
    text += _md(["sequence", "difference", "ACC", "BWT", "prior drop", "near-prior drop"], diffs + _pooled(raw))
    text += "\n\n" + machines_line() + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(text)
    (RESULTS / "summary.json").write_text(json.dumps(raw, indent=1) + "\n")
    plot_sequences(per_sequence, RESULTS / "summary_pareto.png", "Forgetting benchmark, test splits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="all", choices=("all", "tune", "run", "probe", "summary"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--sequences", nargs="+", default=list(SEQUENCES), choices=list(SEQUENCES))
    parser.add_argument("--probe-limit", type=int, default=16)
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run this many sequence × seed units side by side, each pinned to its own cores (2 on a "
        "2-core machine: the same numbers, measured 1.34x the throughput); the tuning run stays one process",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="results directory (default: the committed one); another directory gets its own plans",
    )
    parser.add_argument("--side-by-side", type=int, default=0, help=argparse.SUPPRESS)  # set by run_side_by_side
    parser.add_argument("--cores", type=int, nargs="+", help=argparse.SUPPRESS)  # set by run_side_by_side
    args = parser.parse_args()
    if args.cores and hasattr(os, "sched_setaffinity"):  # before the first parallel region starts its threads
        os.sched_setaffinity(0, args.cores)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.jobs > 1:  # before the tuning run, not after it
        try:
            core_slots(args.jobs, usable_cores())
        except ValueError as e:
            parser.error(str(e))
    use_results(args.results)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command in ("all", "tune") and not (RESULTS / "chosen_lr.json").is_file():
        cmd_tune(args)
    if args.command == "probe" or (args.command == "all" and args.jobs == 1):  # minutes, before the hours of runs
        cmd_probe(args)
    if args.command in ("all", "run"):
        cmd_run(args)
    if args.command == "summary":
        cmd_summary(args)


if __name__ == "__main__":
    main()
