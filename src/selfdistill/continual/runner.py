"""Run a continual-learning plan: per method, train stage after stage from the same base, evaluate every task
after every stage, and write ``results.json`` (after each stage) and the report.

    selfdistill continual examples/tiny.yaml --output runs/tiny      # or: selfdistill demo

Layout of a run directory: ``plan.json`` (the resolved plan), ``results.json`` (schema in ``results.py``),
``<run>/stage<k>-<name>/`` (one per run: a setting with one seed, e.g. ``sdft[lr=3e-5]@seed1``; the training output
of that stage: config, metrics.jsonl, the model; ``eval/`` with
``eval.json`` and per-item ``predictions.jsonl``), ``base/`` (the shared stage-0 evaluation), ``report.md`` and PNGs.
A rerun with the same plan and output skips every finished stage, and inside an unfinished stage continues from
its latest checkpoint. The teacher of stage k starts as a copy of the model at the start of stage k, because each
stage is a fresh ``train`` call whose teacher is built from the model it loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from selfdistill.config import TrainConfig
from selfdistill.continual.budget_report import budget_summary
from selfdistill.continual.budgeted import (
    check_plan_inputs,
    evaluates_during_training,
    guard_base_path,
    guard_references,
    read_selection,
    stage_guards,
    write_guard_base,
)
from selfdistill.continual.config import ContinualConfig, DemoConfig
from selfdistill.continual.plan import (
    Plan,
    PlanError,
    Run,
    Stage,
    load_plan,
    parse_plan,
    run_dir_name,
)
from selfdistill.continual.report import trajectories, write_report
from selfdistill.continual.results import RESULTS_FILE, Results, RunRecord, StageRecord
from selfdistill.continual.stage_eval import evaluate_model, load_tasks, summary, typed_scores
from selfdistill.continual.trackers import log_report, log_run_end, log_stage, open_run, tracker_names
from selfdistill.evaluation.drift import drift_sample
from selfdistill.evaluation.guard import GuardError
from selfdistill.evaluation.tasks.base import Task
from selfdistill.fileio import write_json_atomic
from selfdistill.training.loop import train
from selfdistill.training.selection import KEPT_FILE
from selfdistill.training.setup import OutputDirError, resolve_device

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
TRAINED_MARK = "trained.json"
"""Written into a stage directory once its training returned: a rerun then goes straight to its evaluation."""
DEMO_PLAN = """\
# The offline demo (`selfdistill demo`): SmolLM2-135M-Instruct learns three project-generated skills in a row,
# A → B → C = record_json → ticket_line → arith_steps (sequence s1 of the forgetting benchmark, fixed before any
# result), once with SFT and once with SDFT, from the same start. After every stage it evaluates the three skills,
# their near-prior tasks (what the base model already does on the same prompts) and prior_probe. Each stage is scored
# during training and keeps its best step within a forgetting budget of 0.05, counted from the start model; an earlier
# skill is held to its score when its own stage ended. The next stage starts from the kept model.
# `selfdistill demo` runs this plan (it is embedded in selfdistill/continual/runner.py).
# One seed: docs/science.md says how far seeds move these numbers.
model: smollm2-135m-instruct
output: runs/demo
seed: 0
train:                          # for both methods and every stage (sized to fit 20 min on a 2-core AVX2 CPU)
  batch_size: 4
  max_new_tokens: 40            # the skills' answers are 7-31 tokens; this caps the student's rollouts
  save_every: 0                 # no periodic checkpoints (each costs seconds here); Ctrl-C still saves one
  precision: fp32               # as the benchmark: `auto` takes bf16 where the CPU has it, and bf16 kernels
                                # differ by machine
  eval_every: 6                 # score the skill's validation split and the guards at steps 0 and 6 (the 12-min budget)
  forgetting_budget: 0.05       # keep the best of those points whose guards lost at most 0.05 (cumulative)
  eval_limit: 8                 # items per task at each point (one item = 0.125: a guard may lose one)
methods:
  sft:
    lr: 1.0e-4
  sdft:
    lr: 1.0e-4
    teacher_template: chat-turn # the demonstration as an earlier answer: a 135M teacher copies it
    skip_first_tokens: 0        # the format is decided in the first tokens; chat-turn adds no preamble to skip
stages:
  - {task: record_json, steps: 6}
  - {task: ticket_line, steps: 6}
  - {task: arith_steps, steps: 6}
eval:
  limit: 12                     # test items per task (a fixed seeded subset, the same for both methods)
  batch_size: 16
  near: [near_record_json, near_ticket_line, near_arith_steps]
  prior: [prior_probe]
"""
"""The demo's plan, kept in the code so an installed package has it; ``examples/demo.yaml`` is the same plan."""


# ---------------------------------------------------------------- results.json


def _start_results(plan: Plan, run_dir: Path, overwrite: bool) -> Results:
    """Fresh results, or the ones a previous run of the same plan left (refusing a changed plan)."""
    results_path, plan_path = run_dir / RESULTS_FILE, run_dir / PLAN_FILE
    if overwrite:
        for name in (RESULTS_FILE, PLAN_FILE, "base", *(run_dir_name(r.label) for r in plan.runs)):
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    if plan_path.is_file():
        saved = json.loads(plan_path.read_text(encoding="utf-8"))
        if saved != plan.fingerprint():
            changed = sorted(k for k in {*saved, *plan.fingerprint()} if saved.get(k) != plan.fingerprint().get(k))
            raise OutputDirError(
                f"{run_dir}: holds a run of a different plan (changed: {', '.join(changed)}); "
                "use another --output, or --overwrite to start over"
            )
        if results_path.is_file():
            log.info("resuming the run in %s", run_dir)
            return Results.load(run_dir)
    elif run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise OutputDirError(f"{run_dir}: exists and is not a run of this plan (no {PLAN_FILE}); use another --output")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_path, plan.fingerprint(), indent=1)
    return Results(
        model=plan.model,
        eval_split=plan.eval_split,
        stage_tasks=[stage.name for stage in plan.stages],
        near_tasks=[task.name for task in plan.near],
        prior_tasks=[task.name for task in plan.prior],
        settings=list(plan.methods),
        runs={run.label: RunRecord(run.setting, run.seed, plan.methods[run.setting]) for run in plan.runs},
    )


# ---------------------------------------------------------------- one stage


def _stage_dir(run: str, k: int, stage: Stage) -> str:
    return f"{run_dir_name(run)}/stage{k}-{stage.name}"


def _next_model(stage_dir: Path, overrides: dict[str, Any]) -> str:
    """The model a stage hands on: its full output, or (LoRA) the merged copy, so the next stage adapts it afresh."""
    return str(stage_dir / "merged") if overrides.get("lora") else str(stage_dir)


def _guarded(plan: Plan, record: RunRecord, run: Run, k: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Stage ``k``'s overrides with what it guards: every earlier stage's task and its near-prior tasks join the
    guards, and the references (start model, earlier stages' kept scores) go to ``train`` as its ``guard_base``."""
    if not evaluates_during_training(overrides):
        return overrides
    earlier, keep = stage_guards(plan, run.setting, k)
    guarded = {**overrides, "keep": keep, "guard_stages": earlier}
    refs = guard_references(plan, record, k)
    if any(refs.values()):
        path = guard_base_path(plan.output, _stage_dir(run.label, k, plan.stages[k - 1]))
        guarded["guard_base"] = str(write_guard_base(path, refs))
    return guarded


def _train_stage(
    plan: Plan, stage: Stage, seed: int, overrides: dict[str, Any], start_model: str, out: Path, cfg: ContinualConfig
) -> float:
    """Train a stage into ``out`` (or finish it from its latest checkpoint); return the training seconds."""
    mark = out / TRAINED_MARK
    if mark.is_file():
        return float(json.loads(mark.read_text(encoding="utf-8"))["train_seconds"])
    resume = (out / "train_config.json").is_file() or (out / "config.json").is_file()
    train_cfg = TrainConfig.from_mapping(  # the same mapping → config path as --config FILE
        {
            "data": stage.data,
            "model": start_model,
            "output": out,
            "resume": resume,
            "overwrite": not resume,
            "data_dir": plan.data_dir,
            "seed": seed,
            "device": cfg.device,
            "progress": cfg.progress,
            "max_steps": stage.steps,
            **({"epochs": stage.epochs} if stage.epochs else {}),
            **overrides,
            "merge": bool(overrides.get("lora")),
        }
    )
    start = time.perf_counter()
    train(train_cfg)
    seconds = time.perf_counter() - start
    write_json_atomic(mark, {"train_seconds": seconds}, indent=1)
    return seconds


def _finish_stage(run_dir: Path, results: Results, run: str, stage: StageRecord, prune: bool) -> None:
    results.runs[run].stages.append(stage)
    results.save(run_dir)
    if prune and stage.train_dir:  # a finished stage's scratch weights: its checkpoints and the budget's kept copy
        shutil.rmtree(run_dir / stage.train_dir / "checkpoints", ignore_errors=True)
        (run_dir / stage.train_dir / KEPT_FILE).unlink(missing_ok=True)


def _drop_weights(stage_dir: Path) -> None:
    """Delete a finished stage's model weights (and its merged copy), keeping metrics, configs and evaluation.

    The tokenizer's vocabulary file goes too (3.5 MB for SmolLM2, the same in every stage): without weights the
    directory no longer loads as a model, and it is what makes a results tree too big to commit.
    """
    shutil.rmtree(stage_dir / "merged", ignore_errors=True)
    shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
    (stage_dir / KEPT_FILE).unlink(missing_ok=True)
    (stage_dir / "tokenizer.json").unlink(missing_ok=True)
    for pattern in ("*.safetensors", "*.bin"):
        for path in stage_dir.glob(pattern):
            path.unlink(missing_ok=True)


def _stage_model_exists(plan: Plan, run_dir: Path, run, k: int) -> bool:
    """Whether the model stage ``k`` of ``run`` hands on (its output, or its merged copy) still has its weights."""
    stage = plan.stages[k - 1]
    model_dir = Path(_next_model(run_dir / _stage_dir(run.label, k, stage), plan.train_overrides(run.setting, stage)))
    return (model_dir / "config.json").is_file() and any(model_dir.glob("*.safetensors"))


def _restart_if_unresumable(plan: Plan, run_dir: Path, results: Results, run: Run) -> None:
    """A partial run whose last finished stage has no weights left (deleted with ``keep_models=False``, or a run
    directory restored from results files only) cannot continue: drop its stages and start it over."""
    record = results.runs[run.label]
    done = max((s.index for s in record.stages), default=0)
    if not 0 < done < len(plan.stages):
        return
    if _stage_model_exists(plan, run_dir, run, done):
        return
    next_dir = run_dir / _stage_dir(run.label, done + 1, plan.stages[done])
    if (next_dir / TRAINED_MARK).is_file() and _stage_model_exists(plan, run_dir, run, done + 1):
        return  # the next stage trained already and only needs its evaluation
    log.warning("== [%s]: the model after stage %d is gone, so this run starts over", run.label, done)
    record.stages = [s for s in record.stages if s.index == 0]
    shutil.rmtree(run_dir / run_dir_name(run.label), ignore_errors=True)
    results.save(run_dir)


# ---------------------------------------------------------------- the runner


def _run_stages(
    plan: Plan,
    cfg: ContinualConfig,
    names: list[str],
    tasks: list[tuple[str, Task, int | None]],
    device: torch.device,
    results: Results,
    run: Run,
    run_where: str,
) -> None:
    """Train and evaluate ``run``'s unfinished stages in order; its tracker run gets every stage, recorded or new."""
    run_dir, n = plan.output, len(plan.stages)
    record = results.runs[run.label]
    _restart_if_unresumable(plan, run_dir, results, run)
    with open_run(names, plan, run) as tracked:
        log_stage(tracked, record.stages[0])
        model_spec, previous = plan.model, None
        for k, stage in enumerate(plan.stages, start=1):
            stage_dir = run_dir / _stage_dir(run.label, k, stage)
            overrides = plan.train_overrides(run.setting, stage)
            where = f"{run_where} stage {k}/{n} {stage.name}"
            done = record.stage(k)
            if done is not None:
                log.info("== %s: done, skipped", where)
                log_stage(tracked, done)  # the tracker run is rebuilt from results.json: recorded stages too
                model_spec, previous = _next_model(stage_dir, overrides), stage_dir
                continue
            what = f"{stage.steps} steps" if stage.steps else f"{stage.epochs:g} epochs"
            log.info("== %s: training %s (%s, seed %d) from %s", where, overrides["method"], what, run.seed, model_spec)
            guarded = _guarded(plan, record, run, k, overrides)
            seconds = _train_stage(plan, stage, run.seed, guarded, model_spec, stage_dir, cfg)
            before, model_spec, previous = previous, _next_model(stage_dir, overrides), stage_dir
            log.info("== %s: trained in %.0f s; evaluating", where, seconds)
            scores = evaluate_model(model_spec, plan, tasks, stage_dir / "eval", device, cfg.progress)
            log.info("== %s: %s", where, summary(scores))
            entry = StageRecord(
                k,
                stage.name,
                stage.data,
                _stage_dir(run.label, k, stage),
                seconds,
                typed_scores(scores),
                **read_selection(stage_dir),
            )
            if entry.kept_step is not None:
                log.info("== %s: kept step %d (forgetting budget %s)", where, entry.kept_step, entry.budget)
            _finish_stage(run_dir, results, run.label, entry, cfg.prune_checkpoints)
            log_stage(tracked, entry)
            if before is not None and not cfg.keep_models:
                _drop_weights(before)  # stage k is recorded: a resume never starts from stage k-1 again
        if names:  # the run's own plots come from the report, drawn now from every run finished so far
            write_report(run_dir)
            log_run_end(tracked, run_dir, results, run.label)
    if not cfg.keep_models and len(record.stages) == n + 1:  # the run is done: no stage needs weights
        for k, stage in enumerate(plan.stages, start=1):
            _drop_weights(run_dir / _stage_dir(run.label, k, stage))


def _check_only_seeds(plan: Plan, cfg: ContinualConfig) -> None:
    if cfg.only_seeds is None:
        return
    unknown = sorted(set(cfg.only_seeds) - set(plan.seeds))
    if unknown:
        raise PlanError(
            f"--only-seeds: {', '.join(map(str, unknown))} not in the plan's seeds ({', '.join(map(str, plan.seeds))})"
        )
    if cfg.overwrite:
        raise PlanError("--only-seeds with --overwrite would delete every seed's results; use one or the other")


def run_plan(plan: Plan, cfg: ContinualConfig) -> Path:
    """Run (or resume) ``plan`` into ``plan.output``; return the path of ``report.md``."""
    run_dir = plan.output
    _check_only_seeds(plan, cfg)
    names = tracker_names(plan, cfg.report_to)
    tasks = load_tasks(plan)
    check_plan_inputs(plan)  # anchors, keep tasks, selection splits: a bad one fails before anything is written
    results = _start_results(plan, run_dir, cfg.overwrite)
    device = resolve_device(cfg.device)
    runs = [r for r in plan.runs if cfg.only_seeds is None or r.seed in cfg.only_seeds]
    base = next((record.stages[0] for record in results.runs.values() if record.stages), None)
    if base is None:
        log.info("== base model %s: evaluating %d tasks", plan.model, len(tasks))
        start = time.perf_counter()
        scores = evaluate_model(plan.model, plan, tasks, run_dir / "base", device, cfg.progress)
        log.info("== base: %s (%.0f s)", summary(scores), time.perf_counter() - start)
        base = StageRecord(0, "base", None, None, 0.0, typed_scores(scores))
    for r, run in enumerate(runs, start=1):
        if not results.runs[run.label].stages:  # the same base model for every run: evaluated once, recorded for each
            _finish_stage(run_dir, results, run.label, dataclasses.replace(base), prune=False)
        _run_stages(plan, cfg, names, tasks, device, results, run, f"[{run.label}] (run {r}/{len(runs)})")
    report = write_report(run_dir)
    if names:
        log_report(names, plan, report)
    print(f"report: {report}")
    return report


def run_continual(cfg: ContinualConfig) -> Path:
    """``selfdistill continual PLAN.yaml``: validate the plan, then run or resume it."""
    return run_plan(load_plan(cfg.plan, cfg.output), cfg)


# ---------------------------------------------------------------- the offline demo


def demo_plan(cfg: DemoConfig) -> Plan:
    """The shipped demo plan (``quick``: 2 steps a stage, 8 items a task, 4 at each point in training)."""
    raw = yaml.safe_load(DEMO_PLAN)
    if cfg.data_dir:
        raw["data_dir"] = str(cfg.data_dir)
    if cfg.quick:
        for stage in raw["stages"]:
            stage["steps"] = 2
        raw["eval"]["limit"] = 8
        raw["train"]["eval_limit"] = 4
        for entry in raw["eval"]["prior"]:
            if isinstance(entry, dict):
                entry["limit"] = 8
    try:  # the one guard that reads a data set: a machine without it runs the demo without it, and says so
        drift_sample(cfg.data_dir)
    except GuardError as err:
        raw["train"]["drift"] = False
        log.warning("the demo runs without the drift guard (%s)", err)
    return parse_plan(raw, "demo plan", Path.cwd(), cfg.output)


def run_demo(cfg: DemoConfig) -> Path:
    """``selfdistill demo``: run the demo plan; the last line says where the report is."""
    start = time.perf_counter()
    continual = ContinualConfig(
        plan=Path("demo plan"),
        output=cfg.output,
        overwrite=cfg.overwrite,
        device=cfg.device,
        progress=cfg.progress,
        report_to=cfg.report_to,
    )
    report = run_plan(demo_plan(cfg), continual)
    results = Results.load(report.parent)
    print("\n".join(["", "What each stage kept: each task after each stage (primary metric):", *trajectories(results)]))
    print("\n".join(["", *budget_summary(results, report.parent), ""]))
    print(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min; open {report} (plots beside it)")
    return report
