"""The training loop for ``sdft`` (default), ``sft`` and ``seqkd``: setup → loop → save, in one file.

    train(TrainConfig(data="demos.jsonl", method="sdft", output=Path("runs/x"), max_steps=20))

One step of SDFT reads top to bottom: sample y from the student without the demonstration → teacher logits on
[teacher_prompt(x, c), y] (no grad) → student logits on [x, y] → divergence per token → backward → clip → step →
EMA teacher update → log. SFT uses the demonstration as the completion and token NLL as the loss; seqkd samples y
from the teacher with the demonstration in context, then does SFT on it. The methods differ only in where the
completion comes from and which loss runs on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from selfdistill.cards import ENVIRONMENT
from selfdistill.config import ConfigError, TrainConfig, config_dict
from selfdistill.environment import environment
from selfdistill.fileio import write_text_atomic
from selfdistill.models import load_model
from selfdistill.training import engines, losses, trackers
from selfdistill.training.anchor import anchor_reference, load_anchor
from selfdistill.training.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint
from selfdistill.training.corrected import corrected_sample
from selfdistill.training.correction import tis_stats, tis_weights, token_logprobs
from selfdistill.training.engines import Sampling, seed_for
from selfdistill.training.engines.base import row_seeds
from selfdistill.training.filtering import make_acceptor
from selfdistill.training.prompts import student_prompt_ids, teacher_prompt_ids
from selfdistill.training.ranks import Ranks
from selfdistill.training.rollout import (
    Packed,
    completion_hidden,
    completion_logits,
    eos_ids,
    head_is_separable,
    output_head,
    pack,
)
from selfdistill.training.setup import (
    autocast,
    load_training_examples,
    prepare_output,
    resolve_device,
    save_final,
    uses_bf16,
    wrap_lora,
)
from selfdistill.training.sharding import full_parameters
from selfdistill.training.teacher import Teacher
from selfdistill.training.trackers import Trackers

log = logging.getLogger(__name__)

ANCHOR_STREAM = 1
"""Anchor rollouts are seeded (run seed, micro-batch, position, ANCHOR_STREAM): apart from the task rows' streams."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal (after saving a checkpoint, unless it was a second Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_order(num_examples: int, batch_size: int, seed: int, batch_index: int) -> list[int]:
    """Example indices of micro-batch ``batch_index``: a fresh seeded permutation every epoch, no example dropped."""
    per_epoch = math.ceil(num_examples / batch_size)
    epoch, pos = divmod(batch_index, per_epoch)
    perm = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return perm[pos * batch_size : (pos + 1) * batch_size]


def warmup_cosine(warmup: int, total: int):
    """LR multiplier per step: linear warmup that starts above zero (no wasted step), then cosine decay."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def train(cfg: TrainConfig) -> Path:
    """Run training to completion (or resume it); return the output directory holding the final model."""
    # ---------------------------------------------------------------- setup
    if cfg.method != "sft":
        engines.require(cfg.rollout)  # a missing engine or tracker fails before anything loads or is written
    trackers.require(cfg.report_to)
    examples = load_training_examples(cfg)
    anchor = load_anchor(cfg.anchor, cfg.data_dir, examples) if cfg.anchor else []
    accept = make_acceptor(cfg.data, examples, cfg.data_dir) if cfg.seqkd_filter else None
    _seed_everything(cfg.seed)
    requested = resolve_device(cfg.device)
    ranks = Ranks.setup(requested, cfg.fsdp, uses_bf16(cfg.precision, requested))  # one process, or a torchrun rank
    device = ranks.device
    bf16 = uses_bf16(cfg.precision, device)  # compute in bf16 autocast over fp32 weights, or plain fp32
    ranks.check_batch(cfg.batch_size, len(examples))
    if not ranks.is_main:
        logging.getLogger("selfdistill").setLevel(logging.WARNING)  # rank 0 speaks for all
    model, tok = load_model(cfg.model, device=device, trust_remote_code=cfg.trust_remote_code)
    if cfg.support == "topk" and cfg.topk > model.config.vocab_size:
        raise ConfigError(f"topk: {cfg.topk} is larger than the vocabulary ({model.config.vocab_size} tokens)")
    if cfg.rollout_correction == "topk" and cfg.correction_k > model.config.vocab_size:
        raise ConfigError(
            f"correction-k: {cfg.correction_k} is larger than the vocabulary ({model.config.vocab_size} tokens)"
        )
    if cfg.gradient_checkpointing:  # transformers 5.24 renamed it; older releases have only the first name
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        model = wrap_lora(model, cfg)
    model.train()
    stop_ids = eos_ids(tok, model)
    end_of_turn = stop_ids[0] if tok.eos_token_id is None else tok.eos_token_id

    student_prompts = [student_prompt_ids(tok, ex) for ex in examples]
    anchor_prompts = [student_prompt_ids(tok, ex) for ex in anchor]
    teacher_prompts, n_truncated = [], 0
    if cfg.method != "sft":
        for ex in examples:
            ids, cut = teacher_prompt_ids(
                tok,
                ex,
                cfg.teacher_template,
                max_tokens=cfg.max_teacher_prompt_tokens,
                truncate_demonstration=cfg.truncate_demonstration,
            )
            teacher_prompts.append(ids)
            n_truncated += cut
    if n_truncated:
        log.warning("%d of %d demonstrations truncated to fit the teacher prompt budget", n_truncated, len(examples))
    demos = [tok(ex.completion, add_special_tokens=False)["input_ids"] + [end_of_turn] for ex in examples]
    if cfg.method != "sft":
        engines.preflight(cfg.rollout, model)
    if ranks.is_main:
        prepare_output(cfg, config_dict(cfg))  # only now: bad data, model or prompts must leave nothing behind
        env = environment(device, bf16, ranks.world)
        write_text_atomic(cfg.output / ENVIRONMENT, json.dumps(env, indent=2) + "\n")
    ranks.barrier()

    steps_per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.grad_accum))
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    teacher = Teacher(model, cfg.teacher if cfg.method != "sft" else "live", cfg.ema_rate)
    # the start model, before a resume; with --fsdp its copy is sharded at once, as the student is next
    reference = anchor_reference(model, teacher, ranks.shard if ranks.fsdp else None) if anchor else None
    # DDP under torchrun (it averages gradients in backward); --fsdp: sharded in place, then the teacher likewise;
    # the model itself alone. After this the parameters are final, so the optimizer comes next.
    trained = ranks.wrap(model)
    if ranks.fsdp:
        teacher.shard(ranks.shard)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(int(cfg.warmup_ratio * total_steps), total_steps)
    )
    if ranks.world > 1:  # rollouts are seeded per row (below); what else draws (dropout) differs per rank
        _seed_everything(cfg.seed + 7919 * ranks.rank)

    step = 0
    if cfg.resume and (ckpt := latest_checkpoint(cfg.output)) is not None:
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
        _truncate_metrics(cfg.output / "metrics.jsonl", step)

    def checkpoint(at: int) -> None:
        # every rank takes part (with --fsdp the full state is gathered to rank 0); rank 0 writes
        save_checkpoint(
            cfg.output,
            at,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            teacher=teacher,
            state={
                "examples_seen": at * cfg.batch_size * cfg.grad_accum,
                "total_steps": total_steps,
                "config": config_dict(cfg),
            },
            rng=ranks.gather(rng_state()),
            keep=cfg.keep_checkpoints,
            write=ranks.is_main,
        )

    # Ctrl-C or SIGTERM (what schedulers send before a kill) finishes the current step, saves a checkpoint, then
    # stops; a second Ctrl-C stops at once (the last checkpoint stays valid: saves are atomic). Main thread only.
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if interrupted and signum == signal.SIGINT:
            raise TrainingInterrupted(signum)
        interrupted.append(signum)

    on_main = threading.current_thread() is threading.main_thread()
    log.info(
        "training %s | %s | %d examples | %d steps | %s, %s%s",
        cfg.method,
        cfg.model,
        len(examples),
        total_steps,
        device,
        "bf16 autocast" if bf16 else "fp32",
        " | LoRA" if cfg.lora else "",
    )

    # Chosen once: which models sample (the student for sdft and the anchor, the teacher with the demonstration for
    # seqkd and sdft's warm start), where completions come from, which loss runs on them, and which model's
    # probabilities the importance weights compare with the engine's (the model that sampled).
    def engine_for(name: str, sampler: torch.nn.Module):
        return engines.make_engine(
            name,
            sampler,
            tok,
            version=step,
            autocast=lambda: autocast(cfg.precision, device),
            dtype="bfloat16" if bf16 else "float32",
            seed=cfg.seed + ranks.rank,
            distributed=ranks.world > 1,
            prepack=cfg.prepack,
        )

    student_engine = teacher_engine = None
    if cfg.method == "sdft" or anchor:  # the anchor's samples come from hf unless the rollout engine is the student's
        student_engine = engine_for(cfg.rollout if cfg.method == "sdft" else "hf", model)
    if cfg.method == "seqkd" or cfg.teacher_mix:
        teacher_engine = engine_for(cfg.rollout, teacher.model)
    corrector = None
    if cfg.rollout_correction == "topk":

        def corrector(student_ids, teacher_ids, seeds):
            with autocast(cfg.precision, device):
                return corrected_sample(
                    model,
                    teacher.model,
                    tok,
                    student_ids,
                    teacher_ids,
                    k=cfg.correction_k,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    max_new_tokens=cfg.max_new_tokens,
                    seeds=seeds,
                )

    synced = [(e, m) for e, m in ((student_engine, model), (teacher_engine, teacher.model)) if e is not None]
    # the models that sample, whose full weights every rank holds while it samples (--fsdp)
    samplers = [m for _, m in synced] + ([model, teacher.model] if corrector else [])
    completions_for = _completion_source(
        cfg,
        student_engine,
        teacher_engine,
        student_prompts,
        teacher_prompts,
        demos,
        total_steps,
        accept,
        tok,
        corrector,
    )
    anchor_sampling = dataclasses.replace(_sampling(cfg), num_generations=1)
    distill = cfg.method == "sdft"  # sdft: divergence to the teacher; sft and seqkd: NLL of the completion
    tis_mode, tis_by_teacher = cfg.tis_mode, cfg.method == "seqkd"
    # the default loss with nothing else reading the logits: the LM heads run inside it, where that is exact
    first_example = pack(student_prompts[:1], demos[:1], tok.pad_token_id).to(device)
    fused = (
        distill
        and cfg.fused_head
        and tis_mode == "none"
        and corrector is None
        and not ranks.fsdp
        and (cfg.divergence, cfg.support) == ("forward", "full")
        and all(
            head_is_separable(m, first_example)
            for m in {id(m): m for m in (model, teacher.model, reference and reference.model) if m}.values()
        )
    )
    if distill and cfg.fused_head and not fused:
        log.info("the LM head runs inside the model (logits materialized): the loss or the model needs them")
    timer = PhaseTimer(device)
    with contextlib.ExitStack() as stack:
        if on_main:
            for signum in (signal.SIGINT, signal.SIGTERM):
                stack.callback(signal.signal, signum, signal.signal(signum, on_signal))
        bar = stack.enter_context(
            tqdm(
                total=total_steps,
                initial=step,
                desc=cfg.method,
                unit="step",
                disable=not (cfg.progress and ranks.is_main),
            )
        )
        metrics_file = stack.enter_context((cfg.output / "metrics.jsonl").open("a") if ranks.is_main else _Discard())
        stack.enter_context(logging_redirect_tqdm())  # step lines print above the progress bar, not through it
        tracked = stack.enter_context(
            Trackers.open(cfg.report_to if ranks.is_main else [], cfg.output, cfg.output.name, config_dict(cfg))
        )
        # ------------------------------------------------------------ loop
        while step < total_steps:
            t0 = time.perf_counter()
            stats: dict[str, list[float]] = {}
            for micro in range(cfg.grad_accum):
                micro_index = step * cfg.grad_accum + micro
                global_idx = batch_order(len(examples), cfg.batch_size, cfg.seed, micro_index)
                idx = ranks.share(global_idx)
                # each row samples from its own stream: the rollouts are the same at any rank count, and on resume
                seeds = ranks.share([seed_for(cfg.seed, micro_index, j) for j in range(len(global_idx))])
                # -------- completion: the student's own sample (sdft), the demo (sft), or the teacher's (seqkd)
                with timer("rollout"), ranks.gathered(samplers):
                    batch = completions_for(idx, seeds, step, stats)
                    if anchor:
                        anchor_global = batch_order(
                            len(anchor), cfg.anchor_batch_size or cfg.batch_size, cfg.seed + 1, micro_index
                        )
                        anchor_idx = ranks.share(anchor_global)
                        anchor_seeds = ranks.share(
                            [seed_for(cfg.seed, micro_index, j, ANCHOR_STREAM) for j in range(len(anchor_global))]
                        )
                        anchor_ro = student_engine.generate(
                            [anchor_prompts[i] for i in anchor_idx], anchor_sampling, version=step, seeds=anchor_seeds
                        )
                        anchor_rows = (
                            [anchor_prompts[anchor_idx[j]] for j in anchor_ro.prompt_index],
                            anchor_ro.completions,
                        )
                        anchor_batch = pack(*anchor_rows, tok.pad_token_id).to(device)
                task_rows = ([student_prompts[i] for i in batch.rows], batch.ids)
                student_batch = pack(*task_rows, tok.pad_token_id).to(device)
                mask_BC = student_batch.completion_mask_BC.clone()
                if batch.keep is not None:
                    mask_BC[~torch.tensor(batch.keep, device=device)] = 0
                if distill or tis_by_teacher:
                    teacher_batch = pack([teacher_prompts[i] for i in batch.rows], batch.ids, tok.pad_token_id)
                    teacher_batch = teacher_batch.to(device)
                # -------- loss
                with autocast(cfg.precision, device):
                    if distill:
                        mask_BC[:, : cfg.skip_first_tokens] = 0
                        with timer("teacher"):
                            if fused:
                                teacher_hidden_BCH = teacher.completion_hidden(teacher_batch)
                            else:
                                teacher_logits_BCV = (
                                    teacher.completion_logits(teacher_batch)
                                    if batch.teacher_logits_BCV is None
                                    else batch.teacher_logits_BCV.to(device)
                                )
                                if cfg.teacher_temperature != 1:  # the target is softmax(logits / τ)
                                    teacher_logits_BCV = teacher_logits_BCV / cfg.teacher_temperature
                    if anchor:  # the start model's logits on the anchor rows (its hidden states, with fused)
                        with timer("anchor"):
                            anchor_ref = (reference.hidden if fused else reference)(anchor_batch)
                    with timer("student"):
                        if fused:  # the LM heads run inside the loss, so no [B, C, V] logits are made
                            if anchor:  # one forward (and one backward) over the task rows and the anchor rows
                                student_hidden_BCH, anchor_student_ACH = _joint(
                                    completion_hidden, trained, [task_rows, anchor_rows], tok.pad_token_id, device
                                )
                            else:
                                student_hidden_BCH = completion_hidden(trained, student_batch)
                            loss, loss_BC, token_stats_BC = losses.head_forward_kl(
                                student_hidden_BCH,
                                output_head(model),
                                teacher_hidden_BCH,
                                output_head(teacher.model),
                                student_batch.completion_ids_BC,
                                losses.masked_mean_weights(mask_BC),
                                chunk_size=cfg.loss_chunk_size,
                                teacher_temperature=cfg.teacher_temperature,
                            )
                            student_logits_BCV = teacher_logits_BCV = None
                        else:
                            if anchor:
                                student_logits_BCV, anchor_student_ACV = _joint(
                                    completion_logits, trained, [task_rows, anchor_rows], tok.pad_token_id, device
                                )
                            else:
                                student_logits_BCV = completion_logits(trained, student_batch)
                            if distill:  # the per-token diagnostics come from the loss's own pass where it allows
                                loss_BC, token_stats_BC = losses.distill_loss_and_stats(
                                    student_logits_BCV,
                                    teacher_logits_BCV,
                                    student_batch.completion_ids_BC,
                                    divergence=cfg.divergence,
                                    support=cfg.support,
                                    k=cfg.topk,
                                    beta=cfg.jsd_beta,
                                    chunk_size=cfg.loss_chunk_size,
                                )
                            else:
                                loss_BC = losses.token_nll(student_logits_BCV, student_batch.completion_ids_BC)
                    weights_BC = None
                    if tis_mode != "none":  # the engine sampled: weigh each position toward the trainer's model
                        with timer("tis"):
                            weights_BC = _tis(
                                stats,
                                cfg,
                                tis_mode,
                                batch,
                                student_batch,
                                teacher.completion_logits(teacher_batch) if tis_by_teacher else student_logits_BCV,
                            )
                    with timer("student"):
                        if not fused:
                            loss = losses.masked_mean(loss_BC if weights_BC is None else loss_BC * weights_BC, mask_BC)
                        # DDP averages over ranks; the scale makes it the mean over the global rows
                        loss = loss * ranks.loss_scale(len(idx), len(global_idx))
                        if anchor and fused:
                            anchor_kl = losses.head_forward_kl(
                                anchor_student_ACH,
                                output_head(model),
                                anchor_ref,
                                output_head(reference.model),
                                anchor_batch.completion_ids_BC,
                                losses.masked_mean_weights(anchor_batch.completion_mask_BC),
                                chunk_size=cfg.loss_chunk_size,
                            )[0]
                        elif anchor:
                            anchor_kl = losses.masked_mean(
                                losses.distill_loss(
                                    anchor_student_ACV,
                                    anchor_ref,
                                    anchor_batch.completion_ids_BC,
                                    chunk_size=cfg.loss_chunk_size,
                                ),
                                anchor_batch.completion_mask_BC,
                            )
                        if anchor:
                            scale = ranks.loss_scale(len(anchor_idx), len(anchor_global))
                            loss = loss + cfg.anchor_weight * scale * anchor_kl
                with timer("student"):
                    (loss / cfg.grad_accum).backward()
                # -------- diagnostics (no grad)
                with timer("diagnostics"), torch.no_grad():
                    _collect(stats, "loss", loss.item())
                    if anchor:
                        _collect(stats, "anchor_kl", anchor_kl.item())
                    if distill:
                        _distill_stats(
                            stats,
                            cfg,
                            loss_BC,
                            token_stats_BC,
                            student_logits_BCV,
                            teacher_logits_BCV,
                            student_batch.completion_ids_BC,
                            mask_BC,
                        )
                    _collect(stats, "completion_length", float(np.mean([len(c) for c in batch.ids])))
                    _collect(stats, "hit_length_cap", float(np.mean(batch.hit_cap)))
            # ------------------------------------------------------------ step
            with timer("optimizer"):
                grad_norm = ranks.clip_grad_norm(trainable, cfg.max_grad_norm)
                finite = math.isfinite(grad_norm.item()) and all(math.isfinite(v) for v in stats["loss"])
                if ranks.any(not finite):
                    last_good = latest_checkpoint(cfg.output)
                    raise FloatingPointError(
                        f"step {step + 1}: non-finite loss or gradient (loss {stats['loss']}, grad norm "
                        f"{grad_norm.item()}); stopped before the update; last good checkpoint: "
                        f"{last_good or 'none yet'} (lower --lr, or check the data, then --resume)"
                    )
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            with timer("ema"):
                teacher.update(model)
            step += 1
            for engine, sampler in synced:
                with timer("sync"):
                    engine.sync_weights(sampler, step)  # before the next rollout; generate checks the version
            # ------------------------------------------------------------ log
            record = {"step": step, **ranks.mean({k: float(np.mean(v)) for k, v in stats.items()})}
            record |= {
                "grad_norm": grad_norm.item(),
                "lr": lr,
                "demonstrations_truncated": n_truncated,
                "seconds_per_step": time.perf_counter() - t0,
                **timer.pop(),
            }
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            tracked.log(record, step)
            log.info(_format_record(record, total_steps))
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", s_per_step=f"{record['seconds_per_step']:.1f}")
            stop = ranks.any(bool(interrupted))  # a signal that reached one rank stops every rank here
            if stop or (cfg.save_every and step % cfg.save_every == 0 and step < total_steps):
                checkpoint(step)
            if stop:
                log.warning("interrupted at step %d; checkpoint saved; continue with --resume", step)
                raise TrainingInterrupted(interrupted[0] if interrupted else signal.SIGTERM)

    # ---------------------------------------------------------------- save
    checkpoint(step)
    weights = full_parameters(model) if ranks.fsdp else None  # a collective: rank 0 gets the full weights
    if ranks.is_main:
        save_final(model, tok, cfg, config_dict(cfg), rows=len(examples), weights=weights)
        log.info("done: model saved to %s", cfg.output)
    ranks.barrier()
    return cfg.output


@dataclass
class Completions:
    """One micro-batch's completions: which example each row belongs to, its tokens, whether it hit the cap, and
    the sampler's log-prob of each token (empty for demonstrations)."""

    rows: list[int]
    ids: list[list[int]]
    hit_cap: list[bool]
    sampler_logprobs: list[list[float]]
    keep: list[bool] | None = None
    """Rows that count in the loss (None: all); seqkd's filter drops rewrites the scorer rejects."""
    teacher_logits_BCV: torch.Tensor | None = None
    """The teacher's logits on these completions where the rollout already computed them (corrected rollouts)."""

    @staticmethod
    def concat(parts: list[Completions]) -> Completions:
        return Completions(
            *([x for p in parts for x in getattr(p, f)] for f in ("rows", "ids", "hit_cap", "sampler_logprobs"))
        )


def _sampling(cfg: TrainConfig) -> Sampling:
    return Sampling(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        num_generations=cfg.num_generations,
        min_new_tokens=cfg.min_new_tokens,
        logprobs=cfg.tis_mode != "none",  # only TIS reads the sampler's log-probs
    )


def mix_fraction(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The share of sdft rollouts the teacher samples at ``step``: --teacher-mix, falling linearly to 0 at
    --teacher-mix-until of the steps when that is set."""
    if cfg.teacher_mix_until is None:
        return cfg.teacher_mix
    return cfg.teacher_mix * max(0.0, 1.0 - step / (cfg.teacher_mix_until * total_steps))


def teacher_rows(fraction: float, n: int, rng: random.Random) -> list[int]:
    """Which of ``n`` rows the teacher samples: ``fraction · n`` of them, rounded up or down at random so the
    expected share is exactly ``fraction``."""
    count = int(fraction * n)
    count += rng.random() < fraction * n - count
    return sorted(rng.sample(range(n), count))


def _split(values: list, chosen: set[int]) -> tuple[list, list]:
    """The values at the ``chosen`` positions, and the rest, each in order."""
    return [v for j, v in enumerate(values) if j in chosen], [v for j, v in enumerate(values) if j not in chosen]


def _completion_source(
    cfg, student_engine, teacher_engine, student_prompts, teacher_prompts, demos, total_steps, accept, tok, corrector
):
    """``(idx, seeds, step, stats) -> Completions`` for the method, chosen once: the demonstrations (sft), the student's
    samples without the demonstration (sdft; with --teacher-mix some rows are the teacher's), or the teacher's with
    it (seqkd; with --seqkd-filter only those the task's scorer accepts count)."""
    if cfg.method == "sft":
        return lambda idx, seeds, step, stats: Completions(list(idx), [demos[i] for i in idx], [False] * len(idx), [])
    sampling = _sampling(cfg)

    def from_engine(engine, prompts, idx: list[int], seeds: list[int], step: int) -> Completions:
        ro = engine.generate([prompts[i] for i in idx], sampling, version=step, seeds=seeds)
        return Completions([idx[j] for j in ro.prompt_index], ro.completions, ro.hit_cap, ro.sample_logprobs)

    if cfg.method == "seqkd" and accept is None:
        return lambda idx, seeds, step, stats: from_engine(teacher_engine, teacher_prompts, idx, seeds, step)
    if cfg.method == "seqkd":

        def filtered(idx: list[int], seeds: list[int], step: int, stats) -> Completions:
            batch = from_engine(teacher_engine, teacher_prompts, idx, seeds, step)
            texts = tok.batch_decode(batch.ids, skip_special_tokens=True)
            batch.keep = [accept(i, text) for i, text in zip(batch.rows, texts, strict=True)]
            _collect(stats, "seqkd_kept", float(np.mean(batch.keep)))
            return batch

        return filtered

    def from_student(idx: list[int], seeds: list[int], step: int, stats) -> Completions:
        if corrector is None:
            return from_engine(student_engine, student_prompts, idx, seeds, step)
        rows = [i for i in idx for _ in range(cfg.num_generations)]
        out = corrector(
            [student_prompts[i] for i in rows],
            [teacher_prompts[i] for i in rows],
            row_seeds(seeds, cfg.num_generations),
        )
        _collect(stats, "acceptance_rate", out.acceptance_rate)
        ro = out.rollout
        return Completions(rows, ro.completions, ro.hit_cap, ro.sample_logprobs, None, out.teacher_logits_BCV)

    if not cfg.teacher_mix:
        return from_student

    def mixed(idx: list[int], seeds: list[int], step: int, stats) -> Completions:
        fraction = mix_fraction(cfg, step, total_steps)
        by_teacher = set(teacher_rows(fraction, len(idx), random.Random(hash((cfg.seed, step, *idx)))))
        teacher_idx, student_idx = _split(idx, by_teacher)
        teacher_seeds, student_seeds = _split(seeds, by_teacher)
        _collect(stats, "teacher_mix", fraction)
        _collect(stats, "teacher_rows", len(teacher_idx) / len(idx))
        if not teacher_idx:
            return from_student(student_idx, student_seeds, step, stats)
        teacher_part = from_engine(teacher_engine, teacher_prompts, teacher_idx, teacher_seeds, step)
        if not student_idx:
            return teacher_part
        return Completions.concat([teacher_part, from_student(student_idx, student_seeds, step, stats)])

    return mixed


def _tis(stats, cfg, mode: str, batch: Completions, packed, own_logits_BCV) -> torch.Tensor:
    """Importance weights_BC of the engine's samples toward the trainer's own model (``own_logits_BCV``), logged."""
    ids_BC, mask_BC = packed.completion_ids_BC, packed.completion_mask_BC
    trainer_logp_BC = token_logprobs(own_logits_BCV, ids_BC, cfg.temperature)
    sampler_logp_BC = _pad_right(batch.sampler_logprobs, ids_BC.shape[1], ids_BC.device)
    weights_BC = tis_weights(trainer_logp_BC, sampler_logp_BC, mask_BC, mode, cfg.tis_cap)
    for name, value in tis_stats(trainer_logp_BC, sampler_logp_BC, mask_BC, weights_BC).items():
        _collect(stats, name, value)
    return weights_BC


def _joint(
    per_position: Callable[[torch.nn.Module, Packed], torch.Tensor],
    model: torch.nn.Module,
    parts: list[tuple[list[list[int]], list[list[int]]]],
    pad_id: int,
    device: torch.device,
) -> list[torch.Tensor]:
    """``per_position`` (``completion_logits`` or ``completion_hidden``) of each ``(prompts, completions)`` part, as
    ``pack`` of that part alone would line them up, from one forward over all their rows (so one backward, as DDP
    wants)."""
    prompts = [p for part_prompts, _ in parts for p in part_prompts]
    completions = [c for _, part_completions in parts for c in part_completions]
    out_RC_ = per_position(model, pack(prompts, completions, pad_id).to(device))
    out, start = [], 0
    for _, part_completions in parts:
        width = max(1, max(len(c) for c in part_completions))  # pack's completion width for the part
        out.append(out_RC_[start : start + len(part_completions), :width])
        start += len(part_completions)
    return out


def _pad_right(rows: list[list[float]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row[:width])
    return out.to(device)


def _distill_stats(
    stats, cfg, loss_BC, token_stats_BC, student_logits_BCV, teacher_logits_BCV, ids_BC, mask_BC
) -> None:
    """The forward KL (whatever the loss is) and the per-token teacher/student diagnostics, masked means."""
    kl_BC = loss_BC if (cfg.divergence, cfg.support) == ("forward", "full") else None
    if kl_BC is None:
        kl_BC = losses.distill_loss(student_logits_BCV, teacher_logits_BCV, ids_BC, chunk_size=cfg.loss_chunk_size)
    _collect(stats, "kl", losses.masked_mean(kl_BC.detach(), mask_BC).item())
    for name, val_BC in token_stats_BC.items():
        _collect(stats, name, losses.masked_mean(val_BC, mask_BC).item())


class PhaseTimer:
    """Seconds per phase of a step (``with timer("rollout"): ...``); ``pop()`` returns ``{"seconds_rollout": s}``
    for the phases that ran and starts over. On CUDA it synchronizes at the edges, so a phase owns its kernels."""

    def __init__(self, device: torch.device) -> None:
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self._seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self._seconds[phase] = self._seconds.get(phase, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        out = {f"seconds_{phase}": s for phase, s in self._seconds.items()}
        self._seconds = {}
        return out


class _Discard(contextlib.nullcontext):
    """The metrics file of a rank other than 0: writes go nowhere."""

    def __enter__(self):
        return self

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _collect(stats: dict[str, list[float]], key: str, value: float) -> None:
    stats.setdefault(key, []).append(value)


def _format_record(record: dict, total: int) -> str:
    parts = [f"step {record['step']}/{total}", f"loss {record['loss']:.4f}"]
    if "kl" in record:
        parts.append(f"kl {record['kl']:.4f}")
    parts += [f"len {record['completion_length']:.0f}", f"lr {record['lr']:.1e}"]
    parts.append(f"{record['seconds_per_step']:.1f} s/step")
    return " | ".join(parts)


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so no step appears twice.

    A line torn by a kill mid-write is dropped too; the file is replaced atomically, so a kill here loses nothing.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    write_text_atomic(path, "".join(kept))
