"""The parts of a training step, chosen once from the config: the only place besides ``train()`` that reads it.

    prompts = tokenize(cfg, tok, model, examples, anchor)
    parts = build_parts(cfg, prompts, model=model, tok=tok, teacher=teacher, ...)
    parts.source, parts.objective, parts.terms      # what the loop runs, with no branch on method, anchor or fused

Which models sample (the student for sdft and the anchor; the teacher with the demonstration for seqkd and sdft's
warm start), where completions come from, which loss runs on them, and which model's probabilities the importance
weights compare with the engine's (the model that sampled).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from selfdistill.config import ConfigError, TrainConfig
from selfdistill.training import completions, engines
from selfdistill.training.anchor import AnchorReference
from selfdistill.training.corrected import corrected_sample
from selfdistill.training.engines import RolloutEngine, Sampling
from selfdistill.training.objectives import NLL, HeadForwardKL, LogitsDivergence, Objective
from selfdistill.training.prompts import student_prompt_ids, teacher_prompt_ids
from selfdistill.training.ranks import Ranks
from selfdistill.training.rollout import eos_ids, head_is_separable, pack
from selfdistill.training.setup import autocast
from selfdistill.training.teacher import Teacher
from selfdistill.training.terms import ReplayAnchor, Term, Timer, TISWeights

log = logging.getLogger(__name__)


@dataclass
class Prompts:
    """The run's token ids, made once before training."""

    student: list[list[int]]
    """Each example's prompt as the student sees it (no demonstration)."""
    teacher: list[list[int]]
    """Each example's teacher prompt, with the demonstration (empty for sft)."""
    demos: list[list[int]]
    """Each demonstration, ended by the end-of-turn token."""
    anchor: list[list[int]]
    """The replay anchor's prompts, as the student sees a prompt."""
    truncated: int
    """How many demonstrations were cut to fit the teacher prompt budget."""


@dataclass
class Parts:
    """What the loop runs."""

    source: completions.Source
    """Where each micro-batch's completions come from."""
    objective: Objective
    """The loss on the task rows."""
    terms: list[Term]
    """Extra loss terms with rows of their own (the replay anchor)."""
    synced: list[tuple[RolloutEngine, torch.nn.Module]]
    """Each engine and the model whose weights it is handed after every optimizer step."""
    samplers: list[torch.nn.Module]
    """The models that sample, whose full weights every rank holds while it samples (--fsdp)."""


def check_model(cfg: TrainConfig, model: torch.nn.Module) -> None:
    """Refuse options the model's vocabulary cannot take."""
    vocab = model.config.vocab_size
    if cfg.loss.support == "topk" and cfg.loss.topk > vocab:
        raise ConfigError(f"topk: {cfg.loss.topk} is larger than the vocabulary ({vocab} tokens)")
    if cfg.engine.rollout_correction == "topk" and cfg.engine.correction_k > vocab:
        raise ConfigError(f"correction-k: {cfg.engine.correction_k} is larger than the vocabulary ({vocab} tokens)")


def tokenize(cfg: TrainConfig, tok, model: torch.nn.Module, examples: list, anchor: list) -> Prompts:
    """Every prompt and demonstration as token ids; warns when demonstrations had to be cut."""
    stop_ids = eos_ids(tok, model)
    end_of_turn = stop_ids[0] if tok.eos_token_id is None else tok.eos_token_id
    teacher_prompts, n_truncated = [], 0
    if cfg.method != "sft":
        for ex in examples:
            ids, cut = teacher_prompt_ids(
                tok,
                ex,
                cfg.teaching.teacher_template,
                max_tokens=cfg.teaching.max_teacher_prompt_tokens,
                truncate_demonstration=cfg.teaching.truncate_demonstration,
            )
            teacher_prompts.append(ids)
            n_truncated += cut
    if n_truncated:
        log.warning("%d of %d demonstrations truncated to fit the teacher prompt budget", n_truncated, len(examples))
    return Prompts(
        student=[student_prompt_ids(tok, ex) for ex in examples],
        teacher=teacher_prompts,
        demos=[tok(ex.completion, add_special_tokens=False)["input_ids"] + [end_of_turn] for ex in examples],
        anchor=[student_prompt_ids(tok, ex) for ex in anchor],
        truncated=n_truncated,
    )


def sampling(cfg: TrainConfig) -> Sampling:
    return Sampling(
        max_new_tokens=cfg.sampling.max_new_tokens,
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        num_generations=cfg.sampling.num_generations,
        min_new_tokens=cfg.sampling.min_new_tokens,
        logprobs=cfg.tis_mode != "none",  # only TIS reads the sampler's log-probs
    )


def build_parts(
    cfg: TrainConfig,
    prompts: Prompts,
    *,
    model: torch.nn.Module,
    tok,
    teacher: Teacher,
    reference: AnchorReference | None,
    ranks: Ranks,
    bf16: bool,
    step: int,
    total_steps: int,
    accept,
    timer: Timer,
) -> Parts:
    """The engines, the completion source, the objective and the terms for this run."""

    def engine_for(name: str, sampler: torch.nn.Module) -> RolloutEngine:
        return engines.make_engine(
            name,
            sampler,
            tok,
            version=step,
            autocast=lambda: autocast(cfg.compute.precision, ranks.device),
            dtype="bfloat16" if bf16 else "float32",
            seed=cfg.run.seed + ranks.rank,
            distributed=ranks.world > 1,
            prepack=cfg.engine.prepack,
        )

    student_engine = teacher_engine = None
    if cfg.method == "sdft" or reference:  # the anchor's samples come from hf unless the engine is the student's
        student_engine = engine_for(cfg.engine.rollout if cfg.method == "sdft" else "hf", model)
    if cfg.method == "seqkd" or cfg.teaching.teacher_mix:
        teacher_engine = engine_for(cfg.engine.rollout, teacher.model)
    corrector = _corrector(cfg, model, teacher, tok, ranks.device) if cfg.engine.rollout_correction == "topk" else None
    synced = [(e, m) for e, m in ((student_engine, model), (teacher_engine, teacher.model)) if e is not None]
    samplers = [m for _, m in synced] + ([model, teacher.model] if corrector else [])
    source = _source(cfg, prompts, student_engine, teacher_engine, corrector, accept, tok, total_steps)
    fused = _fused(cfg, prompts, tok.pad_token_id, model, teacher, reference, ranks, corrector is not None)
    objective = _objective(cfg, model, teacher, fused, timer)
    terms: list[Term] = []
    if reference is not None:
        terms.append(
            ReplayAnchor(
                prompts.anchor,
                batch_size=cfg.replay.anchor_batch_size or cfg.optim.batch_size,
                seed=cfg.run.seed,
                engine=student_engine,
                sampling=dataclasses.replace(sampling(cfg), num_generations=1),
                reference=reference,
                student=model,
                weight=cfg.replay.anchor_weight,
                fused=fused,
                chunk_size=cfg.loss.loss_chunk_size,
                ranks=ranks,
                pad_id=tok.pad_token_id,
                device=ranks.device,
                timer=timer,
            )
        )
    return Parts(source, objective, terms, synced, samplers)


def _corrector(cfg: TrainConfig, model, teacher: Teacher, tok, device: torch.device):
    """``(student_ids, teacher_ids, seeds) -> Corrected``: the student's samples, each token checked by the teacher
    as it is drawn (--rollout-correction topk)."""

    def corrector(student_ids, teacher_ids, seeds):
        with autocast(cfg.compute.precision, device):
            return corrected_sample(
                model,
                teacher.model,
                tok,
                student_ids,
                teacher_ids,
                k=cfg.engine.correction_k,
                temperature=cfg.sampling.temperature,
                top_p=cfg.sampling.top_p,
                max_new_tokens=cfg.sampling.max_new_tokens,
                seeds=seeds,
            )

    return corrector


def _source(cfg, prompts, student_engine, teacher_engine, corrector, accept, tok, total_steps) -> completions.Source:
    """The demonstrations (sft), the student's samples without the demonstration (sdft; with --teacher-mix some
    rows are the teacher's), or the teacher's with it (seqkd; with --seqkd-filter only those the scorer accepts
    count)."""
    if cfg.method == "sft":
        return completions.demonstrations(prompts.demos)
    how = sampling(cfg)
    if cfg.method == "seqkd":
        source = completions.sampled(teacher_engine, prompts.teacher, how)
        return source if accept is None else completions.filtered(source, accept, tok)
    if corrector is None:
        source = completions.sampled(student_engine, prompts.student, how)
    else:
        source = completions.corrected(corrector, prompts.student, prompts.teacher, cfg.sampling.num_generations)
    if not cfg.teaching.teacher_mix:
        return source
    by_teacher = completions.sampled(teacher_engine, prompts.teacher, how)
    return completions.mixed(
        by_teacher, source, cfg.teaching.teacher_mix, cfg.teaching.teacher_mix_until, cfg.run.seed, total_steps
    )


def _fused(cfg, prompts, pad_id, model, teacher, reference, ranks, corrected: bool) -> bool:
    """Whether the default loss runs with nothing else reading the logits, on models whose heads are separable:
    then the LM heads run inside the loss, where that is exact."""
    first_example = pack(prompts.student[:1], prompts.demos[:1], pad_id).to(ranks.device)
    fused = (
        cfg.method == "sdft"
        and cfg.loss.fused_head
        and cfg.tis_mode == "none"
        and not corrected
        and not ranks.fsdp
        and (cfg.loss.divergence, cfg.loss.support) == ("forward", "full")
        and all(
            head_is_separable(m, first_example)
            for m in {id(m): m for m in (model, teacher.model, reference and reference.model) if m}.values()
        )
    )
    if cfg.method == "sdft" and cfg.loss.fused_head and not fused:
        log.info("the LM head runs inside the model (logits materialized): the loss or the model needs them")
    return fused


def _objective(cfg: TrainConfig, model, teacher: Teacher, fused: bool, timer: Timer) -> Objective:
    """Fused forward KL from hidden states, a divergence on materialized logits, or NLL; TIS weighs the last two."""
    weighting = None
    if cfg.tis_mode != "none":  # the engine sampled: weigh each position toward the model that did, as the trainer
        sampled_by_teacher = cfg.method == "seqkd"
        weighting = TISWeights(
            cfg.tis_mode, cfg.engine.tis_cap, cfg.sampling.temperature, teacher if sampled_by_teacher else None, timer
        )
    if cfg.method != "sdft":
        return NLL(weighting)
    loss_temperature = cfg.sampling.temperature if cfg.loss.loss_temperature == "rollout" else 1.0
    if fused:
        return HeadForwardKL(
            model,
            teacher,
            cfg.teaching.teacher_temperature,
            cfg.loss.skip_first_tokens,
            cfg.loss.loss_chunk_size,
            timer,
            loss_temperature,
        )
    return LogitsDivergence(
        teacher,
        cfg.loss.divergence,
        cfg.loss.support,
        cfg.loss.topk,
        cfg.loss.jsd_beta,
        cfg.teaching.teacher_temperature,
        cfg.loss.skip_first_tokens,
        cfg.loss.loss_chunk_size,
        timer,
        weighting,
        loss_temperature,
    )
