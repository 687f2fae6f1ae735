"""The training loop for ``sdft`` (default), ``sft`` and ``seqkd``: setup → loop → save, in one file.

    train(TrainConfig(data="demos.jsonl", method="sdft", output=Path("runs/x"), max_steps=20))

One step reads top to bottom: completions (the student's samples without the demonstration for sdft, the
demonstrations for sft, the teacher's rewrites for seqkd) → the teacher's side (no grad) → one student forward over
the task rows and every extra term's rows → the objective's loss plus the terms' → backward → clip → step → teacher
update → log → per-step hooks. The parts are chosen once at setup (parts.py): a completion source (completions.py),
an objective (objectives.py: fused forward KL from hidden states, a divergence on logits, or NLL) and a list of
extra loss terms (terms.py: the replay anchor); the loop has no branch on method, anchor or fused head.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfdistill.cards import ENVIRONMENT
from selfdistill.config import TrainConfig, config_dict
from selfdistill.environment import environment
from selfdistill.evaluation.points import resolve_evaluation
from selfdistill.fileio import write_text_atomic
from selfdistill.training import engines, trackers
from selfdistill.training.anchor import anchor_reference, load_anchor
from selfdistill.training.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint
from selfdistill.training.completions import batch_order, collect, micro_rows, step_completions
from selfdistill.training.filtering import make_acceptor
from selfdistill.training.objectives import TaskBatch, joint_forward
from selfdistill.training.parts import build_parts, check_model, tokenize
from selfdistill.training.ranks import Ranks
from selfdistill.training.runlog import PhaseTimer, StepLog, truncate_metrics
from selfdistill.training.selection import Selector
from selfdistill.training.setup import (
    autocast,
    load_student,
    load_training_examples,
    prepare_output,
    resolve_device,
    save_final,
    uses_bf16,
)
from selfdistill.training.sharding import full_parameters
from selfdistill.training.teacher import Teacher

__all__ = ["StepHook", "StepState", "TrainingInterrupted", "batch_order", "train", "warmup_cosine"]

log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal (after saving a checkpoint, unless it was a second Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class StepState:
    """What a per-step hook sees, after the optimizer step, the teacher update and the engines' sync."""

    step: int
    """Optimizer steps done."""
    total_steps: int
    """Steps the run will take if nothing stops it."""
    record: dict[str, float]
    """The metrics line just logged for this step (the same on every rank)."""
    model: torch.nn.Module
    """The student (unwrapped; with --fsdp, sharded: gather before reading full weights)."""
    tokenizer: Any
    """The student's tokenizer."""
    teacher: Teacher
    """The teacher, already updated for this step."""
    output: Path
    """The run's output directory."""
    ranks: Ranks
    """The processes of the run (a hook that evaluates on rank 0 alone must keep the others in step)."""
    save_checkpoint: Callable[[int], None]
    """Writes a checkpoint of this step (a collective: every rank calls it)."""


StepHook = Callable[[int, StepState], bool]
"""Runs on every rank after every optimizer step; True ends training after this step (the model is saved as at the
end). Where evaluation during training and best-checkpoint selection go."""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(warmup: int, total: int):
    """LR multiplier per step: linear warmup that starts above zero (no wasted step), then cosine decay."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def train(cfg: TrainConfig, hooks: Sequence[StepHook] = ()) -> Path:
    """Run training to completion (or resume it); return the output directory holding the final model. ``hooks``
    run after every optimizer step; one that returns True ends training there."""
    # ---------------------------------------------------------------- setup
    if cfg.method != "sft":
        engines.require(cfg.engine.rollout)  # a missing engine or tracker fails before anything loads or is written
    trackers.require(cfg.run.report_to)
    examples = load_training_examples(cfg.data, cfg.source)
    evaluation = resolve_evaluation(cfg)  # guards, selection split, budget: a bad one fails before any work
    if evaluation is not None and evaluation.selection.train is not None:
        examples = list(evaluation.selection.train)  # the rows held out for selection are not trained on
    anchor = load_anchor(cfg.replay.anchor, cfg.source.data_dir, examples) if cfg.replay.anchor else []
    accept = make_acceptor(cfg.data, examples, cfg.source.data_dir) if cfg.teaching.seqkd_filter else None
    _seed_everything(cfg.run.seed)
    ranks, device, bf16 = _start_ranks(cfg, len(examples))
    model, tok = load_student(cfg, device)
    check_model(cfg, model)
    prompts = tokenize(cfg, tok, model, examples, anchor)
    if cfg.method != "sft":
        engines.preflight(cfg.engine.rollout, model)
    if ranks.is_main:
        prepare_output(cfg.run, config_dict(cfg))  # only now: bad data, model or prompts must leave nothing behind
        env = environment(device, bf16, ranks.world)
        write_text_atomic(cfg.run.output / ENVIRONMENT, json.dumps(env, indent=2) + "\n")
    ranks.barrier()

    steps_per_epoch = math.ceil(len(examples) / (cfg.optim.batch_size * cfg.optim.grad_accum))
    total_steps = cfg.optim.max_steps or max(1, math.ceil(cfg.optim.epochs * steps_per_epoch))
    teacher = Teacher(model, cfg.teaching.teacher if cfg.method != "sft" else "live", cfg.teaching.ema_rate)
    # the start model, before a resume; with --fsdp its copy is sharded at once, as the student is next
    reference = anchor_reference(model, teacher, ranks.shard if ranks.fsdp else None) if anchor else None
    # DDP under torchrun (it averages gradients in backward); --fsdp: sharded in place, then the teacher likewise;
    # the model itself alone. After this the parameters are final, so the optimizer comes next.
    trained = ranks.wrap(model)
    if ranks.fsdp:
        teacher.shard(ranks.shard)
    trainable, optimizer, scheduler = _optimizer(cfg, model, total_steps)
    if ranks.world > 1:  # rollouts are seeded per row (below); what else draws (dropout) differs per rank
        _seed_everything(cfg.run.seed + 7919 * ranks.rank)
    step = _resume(cfg, model, optimizer, scheduler, teacher, ranks)
    checkpoint = functools.partial(
        _save_checkpoint, cfg, model, optimizer, scheduler, teacher, ranks, total_steps=total_steps
    )

    mode = f"{device}, {'bf16 autocast' if bf16 else 'fp32'}{' | LoRA' if cfg.adapter.lora else ''}"
    log.info("training %s | %s | %d examples | %d steps | %s", cfg.method, cfg.model, len(examples), total_steps, mode)
    timer = PhaseTimer(device)
    parts = build_parts(
        cfg,
        prompts,
        model=model,
        tok=tok,
        teacher=teacher,
        reference=reference,
        ranks=ranks,
        bf16=bf16,
        step=step,
        total_steps=total_steps,
        accept=accept,
        timer=timer,
    )
    objective, pad_id = parts.objective, tok.pad_token_id
    state_at = functools.partial(StepState, total_steps=total_steps, model=model, tokenizer=tok, teacher=teacher)
    state_at = functools.partial(state_at, output=cfg.run.output, ranks=ranks, save_checkpoint=checkpoint)
    with (
        _signals_finish_the_step() as interrupted,
        StepLog.open(
            cfg.run.output,
            write=ranks.is_main,
            total_steps=total_steps,
            step=step,
            desc=cfg.method,
            progress=cfg.run.progress,
            report_to=cfg.run.report_to,
            config=config_dict(cfg),
        ) as step_log,
    ):
        selector = None
        if evaluation is not None:  # scores the start model now (or reads a resumed run's points)
            selector = Selector.start(evaluation, cfg, model, tok, ranks, step_log, step, total_steps)
            hooks = [*hooks, selector]
        # ------------------------------------------------------------ loop
        finished = False
        while step < total_steps and not finished:
            t0 = time.perf_counter()
            stats: dict[str, list[float]] = {}
            # -------- completions for the whole step: the task's (the source's) and each term's own rows, in one
            # generation over every micro-batch (--generation-batch-size caps it); each row samples from its own
            # stream, so the rollouts are the same at any rank count and grouping, and on resume
            micro_indices = [step * cfg.optim.grad_accum + micro for micro in range(cfg.optim.grad_accum)]
            shares = [micro_rows(len(examples), cfg.optim.batch_size, cfg.run.seed, ranks, m) for m in micro_indices]
            cap = cfg.sampling.generation_batch_size
            with timer("rollout"), ranks.gathered(parts.samplers):
                batches = step_completions(parts.source, [(i, s) for i, s, _ in shares], step, stats, cap)
                term_draws = [term.draws(micro_indices, step, cap) for term in parts.terms]
            for micro, batch in enumerate(batches):
                idx, global_rows = shares[micro][0], shares[micro][2]
                draws = [drawn[micro] for drawn in term_draws]
                task = TaskBatch.of(batch, prompts.student, prompts.teacher, pad_id, device)
                # -------- loss: targets (no grad), one student forward over every row, the objective + the terms
                with _sync_gradients(trained, micro == cfg.optim.grad_accum - 1):
                    with autocast(cfg.compute.precision, device):
                        target = objective.target(task)
                        for draw in draws:
                            draw.reference()
                        with timer("student"):
                            rows = [task.rows, *(draw.rows for draw in draws)]
                            student_BC_, *term_outs = joint_forward(
                                objective.per_position, trained, rows, pad_id, device
                            )
                            scored = objective.loss(student_BC_, target, task, stats)
                            # DDP averages over ranks; the scale makes it the mean over the global rows
                            loss = scored.loss * ranks.loss_scale(len(idx), global_rows)
                            for draw, out in zip(draws, term_outs, strict=True):
                                loss = loss + draw.loss(out)
                    with timer("student"):
                        (loss / cfg.optim.grad_accum).backward()
                # -------- diagnostics (no grad)
                with timer("diagnostics"), torch.no_grad():
                    collect(stats, "loss", loss.item())
                    for draw in draws:
                        draw.log(stats)
                    objective.log(stats, scored, task)
                    collect(stats, "completion_length", float(np.mean([len(c) for c in batch.ids])))
                    collect(stats, "hit_length_cap", float(np.mean(batch.hit_cap)))
            # ------------------------------------------------------------ step
            with timer("optimizer"):
                grad_norm = ranks.clip_grad_norm(trainable, cfg.optim.max_grad_norm)
                _refuse_non_finite(grad_norm.item(), stats["loss"], step, cfg.run.output, ranks)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            with timer("ema"):
                teacher.update(model)
            step += 1
            for engine, sampler in parts.synced:
                with timer("sync"):
                    engine.sync_weights(sampler, step)  # before the next rollout; generate checks the version
            # ------------------------------------------------------------ log
            record = {"step": step, **ranks.mean({k: float(np.mean(v)) for k, v in stats.items()})}
            record |= {
                "grad_norm": grad_norm.item(),
                "lr": lr,
                "demonstrations_truncated": prompts.truncated,
                "seconds_per_step": time.perf_counter() - t0,
                **timer.pop(),
            }
            step_log.write(record)
            # ------------------------------------------------------------ hooks (evaluation, selection, stopping)
            # every hook runs on every rank; the ranks agree to stop when one hook on one rank says so
            finished = bool(hooks) and ranks.any(
                any([hook(step, state_at(step=step, record=record)) for hook in hooks])
            )
            stop = ranks.any(bool(interrupted))  # a signal that reached one rank stops every rank here
            if stop or (cfg.run.save_every and step % cfg.run.save_every == 0 and step < total_steps and not finished):
                checkpoint(step)
            if stop:
                log.warning("interrupted at step %d; checkpoint saved; continue with --resume", step)
                raise TrainingInterrupted(interrupted[0] if interrupted else signal.SIGTERM)

    # ---------------------------------------------------------------- save
    checkpoint(step)
    if selector is not None:
        selector.finish(step)  # with a budget the kept step's weights are what is saved
    _save_final(cfg, model, tok, ranks, rows=len(examples))
    return cfg.run.output


def _start_ranks(cfg: TrainConfig, rows: int) -> tuple[Ranks, torch.device, bool]:
    """This process's place in the run (one process, or a torchrun rank), its device, and whether it computes in
    bf16 autocast over fp32 weights (else plain fp32)."""
    requested = resolve_device(cfg.compute.device)
    ranks = Ranks.setup(requested, cfg.compute.fsdp, uses_bf16(cfg.compute.precision, requested))
    ranks.check_batch(cfg.optim.batch_size, rows)
    if not ranks.is_main:
        logging.getLogger("selfdistill").setLevel(logging.WARNING)  # rank 0 speaks for all
    return ranks, ranks.device, uses_bf16(cfg.compute.precision, ranks.device)


def _optimizer(cfg: TrainConfig, model: torch.nn.Module, total_steps: int):
    """The trainable parameters, AdamW over them, and the warmup-cosine schedule."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    schedule = warmup_cosine(int(cfg.optim.warmup_ratio * total_steps), total_steps)
    return trainable, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _save_final(cfg: TrainConfig, model: torch.nn.Module, tok: Any, ranks: Ranks, rows: int) -> None:
    """The final model, its tokenizer and card into the output directory (rank 0; with --fsdp, gathered first)."""
    weights = full_parameters(model) if ranks.fsdp else None  # a collective: rank 0 gets the full weights
    if ranks.is_main:
        config = config_dict(cfg)
        save_final(model, tok, cfg.run.output, merge=cfg.adapter.merge, config=config, rows=rows, weights=weights)
        log.info("done: model saved to %s", cfg.run.output)
    ranks.barrier()


def _sync_gradients(trained: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """Under DDP, micro-batches before the last keep their gradients local (``no_sync``, forward and backward
    inside), and the last one's backward all-reduces the sum: one all-reduce per optimizer step. FSDP2 is left to
    reduce-scatter every micro-batch: skipping it (``set_requires_gradient_sync(False)``) would hold the whole
    unsharded gradient on every rank between micro-batches, the memory sharding is there to save."""
    if last or not isinstance(trained, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return trained.no_sync()


@contextlib.contextmanager
def _signals_finish_the_step() -> Iterator[list[int]]:
    """Ctrl-C or SIGTERM (what schedulers send before a kill) is recorded in the yielded list: the loop finishes
    the current step, saves a checkpoint, then stops; a second Ctrl-C stops at once (the last checkpoint stays
    valid: saves are atomic). Handlers can only be set from the main thread; elsewhere signals act as usual."""
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if interrupted and signum == signal.SIGINT:
            raise TrainingInterrupted(signum)
        interrupted.append(signum)

    with contextlib.ExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                stack.callback(signal.signal, signum, signal.signal(signum, on_signal))
        yield interrupted


def _resume(cfg: TrainConfig, model, optimizer, scheduler, teacher: Teacher, ranks: Ranks) -> int:
    """Load the latest checkpoint into the run's state with --resume; the step to continue from (0: a new run).
    metrics.jsonl loses the lines past that step."""
    step = 0
    if cfg.run.resume and (ckpt := latest_checkpoint(cfg.run.output)) is not None:
        state = load_checkpoint(
            ckpt,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            teacher=teacher,
            rank=ranks.rank,
            world=ranks.world,
        )
        step = state["step"]
        log.info("resumed from %s at step %d", ckpt, step)
    if ranks.is_main:
        truncate_metrics(cfg.run.output / "metrics.jsonl", step)
    return step


def _save_checkpoint(
    cfg: TrainConfig, model, optimizer, scheduler, teacher: Teacher, ranks: Ranks, at: int, *, total_steps: int
) -> None:
    """A checkpoint of step ``at``. Every rank takes part (with --fsdp the full state is gathered to rank 0); rank 0
    writes."""
    save_checkpoint(
        cfg.run.output,
        at,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        teacher=teacher,
        state={
            "examples_seen": at * cfg.optim.batch_size * cfg.optim.grad_accum,
            "total_steps": total_steps,
            "config": config_dict(cfg),
        },
        rng=ranks.gather(rng_state()),
        keep=cfg.run.keep_checkpoints,
        write=ranks.is_main,
    )


def _refuse_non_finite(grad_norm: float, losses: list[float], step: int, output: Path, ranks: Ranks) -> None:
    """Stop before the update when any rank's loss or the gradient is not finite, naming the last good checkpoint."""
    finite = math.isfinite(grad_norm) and all(math.isfinite(v) for v in losses)
    if ranks.any(not finite):
        last_good = latest_checkpoint(output)
        raise FloatingPointError(
            f"step {step + 1}: non-finite loss or gradient (loss {losses}, grad norm {grad_norm}); stopped before "
            f"the update; last good checkpoint: {last_good or 'none yet'} (lower --lr, or check the data, then "
            "--resume)"
        )
