"""Evaluation engine: batched log-likelihood and greedy generation, task scoring, and the ``eval`` entry point.

    results = evaluate_tasks(model, tok, [get_task("arc_easy")], limit=200)   # {"arc_easy": {"metrics": ...}}

Log-likelihood follows lm-evaluation-harness: the context's trailing whitespace moves onto the continuation, the
pair is split at the token boundary of ``encode(context)`` inside ``encode(context + continuation)``, and requests
are scored on raw text. Requests that share a context run it once: the context's KV cache is computed in one
forward pass and reused by a second pass over every continuation (multiple-choice items score 2-13 choices on one
context, so this roughly halves to quarters the work on long-context tasks).

Shapes: B contexts in a batch, R requests (continuations) in a batch, T context positions, L continuation
positions, V vocabulary.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from selfdistill.cards import add_scores
from selfdistill.config import config_dict
from selfdistill.evaluation.config import EvalConfig
from selfdistill.evaluation.tasks import expand_task_names, get_task
from selfdistill.evaluation.tasks.base import ChoiceTask, GenerationTask, LoglikRequest, LoglikResult, Task
from selfdistill.fileio import write_json_atomic
from selfdistill.models import load_model
from selfdistill.stats import mean_stderr
from selfdistill.training import engines, trackers
from selfdistill.training.engines import Sampling
from selfdistill.training.prompts import student_prompt_ids
from selfdistill.training.rollout import CACHE_KEY, eos_ids, left_pad

log = logging.getLogger(__name__)

# transformers 5.x renamed the KV-cache argument and output `past_key_values` -> `cache` (the old name warns).
MIN_SHARED_PREFIX = 16
"""Token length from which a prompt shared by every request is computed once (shorter ones are not worth it)."""


@contextmanager
def _inference(model: PreTrainedModel) -> Iterator[None]:
    """Eval mode (dropout off) and no autograd, restoring the caller's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------------- log-likelihood
def encode_pair(tok: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids, split as lm-eval does (continuation = tokens of the whole past the
    context)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:  # "Answer: " + "A" must tokenize as "Answer:" + " A", the way the model saw such text
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not continuation:
        raise ValueError(f"empty continuation for context {context[-40:]!r}")
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if not context:  # condition on BOS (or EOS), as lm-eval does for an empty context
        cont = tok.encode(continuation, add_special_tokens=False)
        return ([prefix], cont) if cont[:1] != [prefix] else (cont[:1], cont[1:])
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    return ctx, whole[len(ctx) :]


def _batches(encoded: list[tuple[list[int], list[int]]], batch_size: int) -> list[list[tuple[tuple, list[int]]]]:
    """Group requests by identical context ids, longest first; a batch holds at most ``batch_size`` requests.

    A batch is a list of ``(context ids, request indices)``: the context runs once for all its requests.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(encoded):
        groups.setdefault(tuple(ctx), []).append(i)
    chunks = [(ctx, idx[k : k + batch_size]) for ctx, idx in groups.items() for k in range(0, len(idx), batch_size)]
    chunks.sort(key=lambda c: -(len(c[0]) + max(len(encoded[i][1]) for i in c[1])))
    batches: list[list[tuple[tuple, list[int]]]] = []
    for chunk in chunks:
        if batches and sum(len(idx) for _, idx in batches[-1]) + len(chunk[1]) <= batch_size:
            batches[-1].append(chunk)
        else:
            batches.append([chunk])
    return batches


def _score_batch(model, contexts: list[Sequence[int]], conts: list[list[int]], owner: list[int], pad_id: int, prefix):
    """Score ``conts[r]`` after ``prefix + contexts[owner[r]]``: pass 1 caches each context, pass 2 reads every
    continuation. ``prefix`` is ``(cache, P)`` of a shared prompt already run, or None."""
    device = next(model.parameters()).device
    ids_BT, mask_BT = (t.to(device) for t in left_pad(contexts, pad_id))
    B, P = len(contexts), prefix[1] if prefix else 0
    past = {}
    if prefix:  # rows: [shared prefix | left padding | own context]; a copy, as the forward pass extends it
        past = {CACHE_KEY: copy.deepcopy(prefix[0])}
        past[CACHE_KEY].reorder_cache(torch.zeros(B, dtype=torch.long, device=device))
    mask_BT = torch.cat([torch.ones((B, P), dtype=torch.long, device=device), mask_BT], dim=1)
    pos_BT = (mask_BT.cumsum(-1) - 1).clamp(min=0)[:, P:]
    inputs = {"input_ids": ids_BT, "attention_mask": mask_BT, "position_ids": pos_BT, **past}
    # logits_to_keep=1: only the last context position's logits are needed (the vocab projection is costly)
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    first_BV = out.logits[:, -1].float().log_softmax(-1)

    R, L = len(conts), max(len(c) for c in conts)
    owner_R = torch.tensor(owner, device=device)
    target_RL = torch.full((R, L), pad_id, dtype=torch.long)
    valid_RL = torch.zeros((R, L), dtype=torch.bool)
    for r, cont in enumerate(conts):
        target_RL[r, : len(cont)] = torch.tensor(cont)
        valid_RL[r, : len(cont)] = True
    target_RL, valid_RL = target_RL.to(device), valid_RL.to(device)
    logp_RLV = first_BV[owner_R].unsqueeze(1)  # predicts each continuation's first token
    if L > 1:  # feed tokens 0..L-2 of each continuation on top of its context's cache
        cache = out[CACHE_KEY]
        cache.reorder_cache(owner_R)  # one cache row per request (rows repeat where contexts are shared)
        inp_RL = target_RL[:, :-1]
        mask = torch.cat([mask_BT[owner_R], valid_RL[:, :-1].long()], dim=1)
        pos_RL = mask_BT.sum(-1)[owner_R, None] + torch.arange(L - 1, device=device)
        kwargs = {CACHE_KEY: cache, "use_cache": True}
        logits = model(input_ids=inp_RL, attention_mask=mask, position_ids=pos_RL, **kwargs).logits
        logp_RLV = torch.cat([logp_RLV, logits.float().log_softmax(-1)], dim=1)
    token_lp_RL = logp_RLV.gather(-1, target_RL.unsqueeze(-1)).squeeze(-1)
    greedy_RL = (logp_RLV.argmax(-1) == target_RL) | ~valid_RL
    sums = token_lp_RL.masked_fill(~valid_RL, 0).double().sum(-1).tolist()
    greedy = greedy_RL.all(-1).tolist()
    return [LoglikResult(sums[r], bool(greedy[r]), len(conts[r])) for r in range(R)]


def loglikelihood(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    requests: list[LoglikRequest],
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "loglikelihood",
) -> list[LoglikResult]:
    """Summed log-probability of each continuation given its context, and whether it is the greedy one; input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_len = getattr(model.config, "max_position_embeddings", None)
    encoded = []
    for req in requests:
        ctx, cont = encode_pair(tok, req.context, req.continuation)
        if max_len and len(ctx) + len(cont) > max_len + 1:
            # keep the context's end, as lm-eval's left truncation
            ctx = ctx[len(ctx) + len(cont) - max_len - 1 :] or ctx[-1:]
        encoded.append((ctx, cont))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    results: list[LoglikResult | None] = [None] * len(requests)
    with _inference(model), tqdm(total=len(requests), desc=desc, disable=not progress) as bar:
        # A prompt that every request starts with (a few-shot primer) is run once; batches reuse its KV cache.
        shared = os.path.commonprefix([ctx for ctx, _ in encoded]) if len(encoded) > 1 else []
        shared = shared[: min(len(ctx) for ctx, _ in encoded) - 1]  # each context keeps a token of its own
        prefix = None
        if len(shared) >= MIN_SHARED_PREFIX:
            ids = torch.tensor([shared], device=next(model.parameters()).device)
            prefix = (model(input_ids=ids, use_cache=True, logits_to_keep=1)[CACHE_KEY], len(shared))
            encoded = [(ctx[len(shared) :], cont) for ctx, cont in encoded]
        for batch in _batches(encoded, batch_size):
            index = [i for _, idx in batch for i in idx]
            owner = [b for b, (_, idx) in enumerate(batch) for _ in idx]
            contexts = [ctx for ctx, _ in batch]
            scored = _score_batch(model, contexts, [encoded[i][1] for i in index], owner, pad_id, prefix)
            for i, res in zip(index, scored, strict=True):
                results[i] = res
            bar.update(len(index))
    return results  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------------------- generation
def generate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generate",
    engine=None,
) -> list[str]:
    """Greedy completions (special tokens dropped, cut at EOS) of left-padded prompt batches; input order.

    With ``engine`` (a rollout engine holding the model's weights, e.g. vLLM) the engine decodes instead."""
    if batch_size < 1 or any(not p for p in prompt_ids):
        raise ValueError(f"generate: batch_size must be >= 1 (got {batch_size}) and prompts non-empty")
    if engine is not None:
        ro = engine.generate(prompt_ids, Sampling(max_new_tokens=max_new_tokens, greedy=True, logprobs=False))
        return [tok.decode(ids, skip_special_tokens=True) for ids in ro.completions]
    eos = eos_ids(tok, model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id, eos_token_id=eos, use_cache=True
    )
    device = next(model.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    outputs = [""] * len(prompt_ids)
    with _inference(model), tqdm(total=len(order), desc=desc, disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            ids_BT, mask_BT = (t.to(device) for t in left_pad([prompt_ids[i] for i in index], pad_id))
            out = model.generate(input_ids=ids_BT, attention_mask=mask_BT, generation_config=gen_cfg)
            for b, i in enumerate(index):
                new = out[b, ids_BT.shape[1] :].tolist()
                cut = next((k for k, t in enumerate(new) if t in eos), len(new))
                outputs[i] = tok.decode(new[:cut], skip_special_tokens=True)
            bar.update(len(index))
    return outputs


# ----------------------------------------------------------------------------------------------------------- scoring
def subset_indices(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """The items ``--limit`` evaluates: all of them, or ``limit`` drawn with ``random.Random(seed)``, in file order."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def _choice_rows(model, tok, task: ChoiceTask, limit: int | None, seed: int, **opts: Any) -> list[dict]:
    items = task.test_items()
    items = [items[i] for i in subset_indices(len(items), limit, seed)]
    requests = [req for item in items for req in item.requests]
    results = loglikelihood(model, tok, requests, desc=task.name, **opts)
    rows, k = [], 0
    for item in items:
        res = results[k : k + len(item.requests)]
        k += len(item.requests)
        row = {"id": item.id, "logprobs": [r.logprob for r in res], "is_greedy": [r.is_greedy for r in res]}
        row |= {"gold": item.gold, "labels": list(item.labels) if item.labels else None}
        rows.append(row | {"scores": task.score(item, res)})
    return rows


def _generation_rows(
    model, tok, task: GenerationTask, limit: int | None, seed: int, engine=None, **opts: Any
) -> list[dict]:
    examples = task.test_examples()
    index = subset_indices(len(examples), limit, seed)
    prompts = [student_prompt_ids(tok, examples[i]) for i in index]
    outputs = generate(model, tok, prompts, task.max_new_tokens, desc=task.name, engine=engine, **opts)
    return [
        {"id": str(i), "prediction": out, "gold": examples[i].answer, "scores": task.score(examples[i], out)}
        for i, out in zip(index, outputs, strict=True)
    ]


def aggregate(scores: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float | None]]:
    """Mean and standard error (sample std / sqrt(n)) of each per-item metric, in the order items report them.

    A per-item ``logprob`` also yields ``perplexity = exp(-mean logprob)``, as lm-eval aggregates LAMBADA.
    """
    metrics: dict[str, float] = {}
    stderr: dict[str, float | None] = {}
    for name in dict.fromkeys(m for s in scores for m in s):
        metrics[name], stderr[name] = mean_stderr([s[name] for s in scores if name in s])
    if "logprob" in metrics:
        metrics["perplexity"] = math.exp(-metrics["logprob"])
        stderr["perplexity"] = None
    return metrics, stderr


def evaluate_tasks(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    tasks: list[Task],
    *,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    predictions_path: Path | None = None,
    progress: bool = True,
    engine=None,
) -> dict[str, dict]:
    """Score each task on its test items (or a seeded ``limit`` subset); optionally write per-item predictions.

    Generation tasks sample greedily through ``engine`` when one is given (a rollout engine holding the model's
    weights), else with HF ``generate``; log-likelihood tasks always run the model itself."""
    results: dict[str, dict] = {}
    opts = {"batch_size": batch_size, "progress": progress}
    if predictions_path:
        Path(predictions_path).write_text("")
    for task in tasks:
        start = time.perf_counter()
        if isinstance(task, ChoiceTask):
            rows = _choice_rows(model, tok, task, limit, seed, **opts)
        elif isinstance(task, GenerationTask):
            rows = _generation_rows(model, tok, task, limit, seed, engine, **opts)
        else:
            raise TypeError(f"{task.name}: not a ChoiceTask or GenerationTask")
        metrics, stderr = aggregate([row["scores"] for row in rows])
        if custom := getattr(task, "aggregate", None):  # e.g. IFEval weighs each instruction, not each prompt
            metrics |= custom([row["scores"] for row in rows])
        seconds = time.perf_counter() - start
        results[task.name] = {"metrics": metrics, "stderr": stderr, "n": len(rows)}
        results[task.name] |= {"primary": task.primary_metric, "seconds": round(seconds, 2)}
        log.info("%s: %s (n=%d, %.1f s)", task.name, metrics, len(rows), seconds)
        if predictions_path:  # appended task by task, so a crash keeps what was finished
            with Path(predictions_path).open("a", encoding="utf-8") as f:
                f.writelines(json.dumps({"task": task.name, **row}, default=str) + "\n" for row in rows)
    return results


# ------------------------------------------------------------------------------------------------------ entry point
def format_table(results: dict[str, dict]) -> str:
    """Task, metric, value ± stderr, n, seconds; the primary metric first."""
    lines = [f"{'task':<16} {'metric':<11} {'value':>17} {'n':>6} {'seconds':>8}"]
    for name, res in results.items():
        for k, (metric, value) in enumerate(res["metrics"].items()):
            err = res["stderr"].get(metric)
            shown = f"{value:.4f} ± {err:.4f}" if err is not None else f"{value:.4f}"
            tail = f"{res['n']:>6} {res['seconds']:>8.1f}" if k == 0 else ""
            lines.append(f"{name if k == 0 else '':<16} {metric:<11} {shown:>17} {tail}".rstrip())
    return "\n".join(lines)


def card_scores(results: dict[str, dict], limit: int | None = None) -> dict[str, dict]:
    """Each task's primary score as a model card lists it (``cards.add_scores``)."""
    note = f" (subset of {limit})" if limit else ""
    return {
        name: {"metric": r["primary"] + note, "value": r["metrics"][r["primary"]], "n": r["n"]}
        for name, r in results.items()
        if r["primary"] in r["metrics"]
    }


def tracker_scalars(results: dict[str, dict]) -> dict[str, float]:
    """Every task's metrics as trackers get them: ``eval/<task>/<metric>`` (eval and continual runs alike)."""
    return {f"eval/{task}/{name}": value for task, r in results.items() for name, value in r["metrics"].items()}


def run_eval(cfg: EvalConfig) -> dict:
    """Load the model, evaluate the tasks, print a table; write ``{"config", "results"}`` JSON to ``cfg.output``."""
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    names = expand_task_names(cfg.tasks)
    engines.require(cfg.rollout)
    trackers.require(cfg.report_to)
    # Resolve every task and read its data before loading the model, so a bad name or a missing file fails fast.
    tasks = [get_task(name, cfg.data_dir) for name in names]
    for task in tasks:
        task.test_items() if isinstance(task, ChoiceTask) else task.test_examples()
    model, tok = load_model(cfg.model, dtype=torch.float32, device=device, trust_remote_code=cfg.trust_remote_code)
    preds = cfg.output.with_name(f"{cfg.output.stem}.predictions.jsonl") if cfg.output else None
    if cfg.output:
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
    engine = None
    if cfg.rollout != "hf" and any(isinstance(t, GenerationTask) for t in tasks):
        engine = engines.make_engine(cfg.rollout, model, tok, seed=cfg.seed)
    try:
        results = evaluate_tasks(
            model,
            tok,
            tasks,
            limit=cfg.limit,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            predictions_path=preds,
            engine=engine,
        )
    finally:
        if engine is not None:
            engine.close()
    print(format_table(results))
    config = config_dict(cfg)
    if cfg.report_to:
        with trackers.Trackers.open(cfg.report_to, cfg.output.parent, cfg.output.stem, config) as tracked:
            tracked.log(tracker_scalars(results), step=0)
    if Path(cfg.model).is_dir():  # a selfdistill output: its model card lists these scores from now on
        add_scores(Path(cfg.model), card_scores(results, cfg.limit), source="selfdistill eval")
    report = {"config": config | {"tasks": names}, "results": results}
    if cfg.output:
        write_json_atomic(cfg.output, report)
    return report
